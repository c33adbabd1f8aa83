"""Collections, their documents and search over the API."""
from __future__ import annotations

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail, ParseError
from rest_framework.utils import html

from core.api.parsers import json_parse
from core.api.serializers import StrictSerializer
from core.models import INT_MAX
from knowledge.models import Collection, CollectionDocument
from knowledge.search import MAX_K, MODES

MAX_METADATA_KEYS = 50


class CollectionSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    documents = serializers.SerializerMethodField()

    class Meta:
        model = Collection
        fields = ("id", "name", "description", "owner", "shared", "embedding_model", "dimensions", "chunk_size",
                  "chunk_overlap", "pending_embedding_model", "reembed_error", "documents", "created_at", "updated_at")
        read_only_fields = fields

    def get_documents(self, collection: Collection) -> int:
        counted = getattr(collection, "document_count", None)  # knowledge.selectors.collection_list's
        return collection.documents.count() if counted is None else counted


class CollectionWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    shared = serializers.BooleanField(default=False, help_text="staff only: every user may read and search it")
    embedding_model = serializers.CharField(max_length=255, required=False, help_text=(
        "`provider/model` (or a model name the gateway knows); default CHATTER_KNOWLEDGE_EMBEDDING_MODEL. Fixed "
        "from now on"))
    chunk_size = serializers.IntegerField(required=False, min_value=1, max_value=INT_MAX,
                                          help_text="in the model's tokens; fixed")
    chunk_overlap = serializers.IntegerField(required=False, min_value=0, max_value=INT_MAX,
                                             help_text="in the model's tokens; fixed")


class CollectionUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    shared = serializers.BooleanField(required=False)
    embedding_model = serializers.CharField(max_length=255, required=False, help_text=(
        "another model re-embeds every document as a background job (`pending_embedding_model` until it ends; "
        "searches use the old vectors until then; progress: `collection_updated` on /ws/events/)"))


class CollectionDocumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = CollectionDocument
        fields = ("id", "collection", "title", "metadata", "status", "error", "chunk_count", "content_hash",
                  "created_at", "updated_at")
        read_only_fields = fields


class MetadataField(serializers.DictField):
    def to_internal_value(self, data):
        metadata = super().to_internal_value(data)
        if len(metadata) > MAX_METADATA_KEYS:
            raise serializers.ValidationError(f"at most {MAX_METADATA_KEYS} keys")
        return metadata


class CollectionDocumentWriteSerializer(StrictSerializer):
    title = serializers.CharField(max_length=255)
    text = serializers.CharField(trim_whitespace=False)
    metadata = MetadataField(required=False, default=dict, help_text="searched with `filters`")


class JSONMetadataField(MetadataField):
    """A form field holding document metadata as a JSON object (read as every JSON body is)."""

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, serializers.empty)  # the form's one value, not `metadata.key` fields

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json_parse(data.encode())
            except ParseError as error:
                raise serializers.ValidationError(f"metadata must be a JSON object: {error.detail}") from None
        return super().to_internal_value(data)


class CollectionDocumentUploadSerializer(StrictSerializer):
    file = serializers.FileField(allow_empty_file=False, help_text=(
        "PDF, DOCX, HTML, Markdown, CSV or plain text, at most CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES"))
    title = serializers.CharField(max_length=255, required=False, help_text="the file's name by default")
    metadata = JSONMetadataField(required=False, default=dict, help_text="a JSON object, searched with `filters`")

    def to_internal_value(self, data):
        # A form may repeat a part (two `file` parts): its fields would read the last and drop the others, and which
        # one the client meant is not ours to guess (as a JSON key given twice is refused: core.api.parsers).
        if html.is_html_input(data):
            repeated = [name for name in self.fields if len(data.getlist(name)) > 1]
            if repeated:
                raise serializers.ValidationError({name: [ErrorDetail(
                    f"one part named {name!r}, not {len(data.getlist(name))}", code="repeated")] for name in repeated})
        return super().to_internal_value(data)


class SearchSerializer(StrictSerializer):
    query = serializers.CharField(max_length=2000)
    k = serializers.IntegerField(default=5, min_value=1, max_value=MAX_K)
    mode = serializers.ChoiceField(choices=MODES, default="hybrid")
    score_threshold = serializers.FloatField(required=False, allow_null=True, default=None)
    filters = serializers.DictField(required=False, default=dict,
                                    help_text="document metadata key: value, all must match")
    rerank_model = serializers.CharField(max_length=255, required=False, allow_null=True, default=None, help_text=(
        "a model with a rerank API (`provider/model` or a model name): the chunks found are reranked by it"))


class HitSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField(source="chunk.pk")
    document_id = serializers.UUIDField(source="chunk.document_id")
    title = serializers.CharField(source="chunk.document.title")
    text = serializers.CharField(source="chunk.text")
    position = serializers.IntegerField(source="chunk.position")
    score = serializers.FloatField()
    scores = serializers.DictField(child=serializers.FloatField())


class SearchResultSerializer(serializers.Serializer):
    results = HitSerializer(many=True)
