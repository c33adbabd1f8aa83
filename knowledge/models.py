import uuid

from django.conf import settings
from django.db import models

from knowledge.vectors import EmbeddingField


class Collection(models.Model):
    """A user's named set of documents, searched by meaning and by words. Its embedding model (`provider/model`),
    the vectors' size and how its documents are cut (chunk size and overlap, in the model's tokens) are fixed when
    it is made: every vector of a collection compares with every other. Staff may share one with everyone."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="collections")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    shared = models.BooleanField(default=False)  # visible (read and search) to every user; set by staff only
    embedding_model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    chunk_size = models.PositiveIntegerField()
    chunk_overlap = models.PositiveIntegerField()
    # A change of embedding model under way (knowledge.reembed): the model its documents are being embedded with
    # and its vectors' size. Searches use the model above and its chunks until every document's new chunks are in
    # place; then one transaction swaps them. A failed change leaves the old model and says why.
    pending_embedding_model = models.CharField(max_length=255, blank=True, default="")
    pending_dimensions = models.PositiveIntegerField(null=True, blank=True)
    reembed_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="collection_owner_name_unique"),
            models.CheckConstraint(condition=models.Q(chunk_overlap__lt=models.F("chunk_size")),
                                   name="collection_overlap_below_size"),
        ]

    def __str__(self) -> str:
        return self.name


class CollectionDocument(models.Model):
    """A document of a collection: its text as given (a file's as parsed), and its state on the way to chunks.
    Its content hash tells an identical re-add, which changes nothing. An uploaded file is kept (`file_data`) until
    the ingestion job has read it into `text`."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=255)
    text = models.TextField(blank=True, default="")  # a file's is empty until the job reads it
    content_hash = models.CharField(max_length=64)  # SHA-256 of the text, or of an uploaded file's bytes
    file_name = models.CharField(max_length=255, blank=True, default="")
    content_type = models.CharField(max_length=255, blank=True, default="")  # as the upload declared it
    file_data = models.BinaryField(null=True, blank=True, editable=False)  # the upload, until it is read
    # A document of /api/v1/documents/ (conversations' Document) mirrored in its owner's default collection
    # (knowledge.defaults): deleted with it.
    source_document = models.OneToOneField("conversations.Document", null=True, blank=True, editable=False,
                                           on_delete=models.CASCADE, related_name="collection_document")
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True, default="")  # why it failed
    chunk_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "document"
        constraints = [models.UniqueConstraint(fields=["collection", "content_hash"],
                                               name="collection_document_content_unique")]

    def __str__(self) -> str:
        return self.title


class Chunk(models.Model):
    """A piece of text and its embedding. The column has no fixed size: an embedding model's vectors have their
    own (`dimensions`), and a search compares vectors of one size. A document's chunks carry its collection (what
    a search filters on) and their position in it."""

    text = models.TextField()
    dimensions = models.PositiveIntegerField()
    embedding = EmbeddingField()
    collection = models.ForeignKey(Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(CollectionDocument, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="chunks")
    position = models.PositiveIntegerField(default=0)  # its order in its document, from 0
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(dimensions__gt=0), name="chunk_dimensions_positive")]
        indexes = [models.Index(fields=["collection", "dimensions"], name="chunk_collection_dimensions")]

    def __str__(self) -> str:
        return self.text[:60]
