"""/api/v1/collections/: your collections and the shared ones (another user's own is a 404 on every route), their
documents (`documents/`: add JSON text, which is chunked and embedded at once; DELETE a document removes its chunks
and vectors) and search (`search/`). An API key needs the `knowledge` scope. Thin: validate, call one service or
selector, render."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.parsers import JSONParser, MultiPartParser
from core.api.viewsets import OwnedViewSet, url_uuid
from core.errors import Conflict, NotFound
from keys.auth import request_api_key
from knowledge.api.filters import CollectionDocumentFilter, CollectionFilter
from knowledge.api.serializers import (CollectionDocumentSerializer, CollectionDocumentWriteSerializer,
                                       CollectionDocumentUploadSerializer, CollectionSerializer,
                                       CollectionUpdateSerializer, CollectionWriteSerializer, SearchResultSerializer,
                                       SearchSerializer)
from knowledge.ingest import document_ingest
from knowledge.models import Collection, CollectionDocument
from knowledge.search import collection_search
from knowledge.selectors import collection_list, document_list
from knowledge.services import (collection_create, collection_delete, collection_update, document_add,
                                document_delete, document_upload)

KNOWLEDGE_SCOPE = "knowledge"
DOCUMENT_ID = OpenApiParameter("document_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
DOCUMENT_ORDERING = ("created_at", "title", "status")  # a collection's documents' ?ordering= fields


class CollectionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    queryset = Collection.objects.none()
    serializer_class = CollectionSerializer
    filterset_class = CollectionFilter
    ordering_fields = ("name", "created_at")
    ordering = ("name",)
    key_scope = KNOWLEDGE_SCOPE
    key_scope_read = KNOWLEDGE_SCOPE
    not_found = "collection not found"
    upload_limit_setting = None  # set on the route that takes files (core.api.parsers)

    def get_queryset(self):
        return collection_list(user=self.request.user)

    @extend_schema(request=CollectionWriteSerializer, responses={201: CollectionSerializer})
    def create(self, request: Request) -> Response:
        serializer = CollectionWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        collection = collection_create(owner=request.user, api_key=request_api_key(request),
                                       **serializer.validated_data)
        return Response(CollectionSerializer(collection).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CollectionUpdateSerializer, responses=CollectionSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        collection = self.get_object()
        serializer = CollectionUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        collection = collection_update(collection=collection, actor=request.user, api_key=request_api_key(request),
                                       changes=dict(serializer.validated_data))
        return Response(CollectionSerializer(collection).data)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        collection_delete(collection=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], responses=CollectionDocumentSerializer(many=True), filters=False,
                   parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=CollectionDocument.Status.values),
                               OpenApiParameter("title", OpenApiTypes.STR, description="a part of the title"),
                               OpenApiParameter("created_after", OpenApiTypes.DATETIME),
                               OpenApiParameter("created_before", OpenApiTypes.DATETIME),
                               OpenApiParameter("ordering", OpenApiTypes.STR, description=(
                                   f"comma-separated fields to sort by, `-` to reverse; one of: "
                                   f"{', '.join(DOCUMENT_ORDERING)} (any other is a 400)"))])
    @extend_schema(methods=["POST"], request={"application/json": CollectionDocumentWriteSerializer,
                                              "multipart/form-data": CollectionDocumentUploadSerializer},
                   responses={201: CollectionDocumentSerializer, 202: CollectionDocumentSerializer,
                              200: CollectionDocumentSerializer})
    # The schema's filters are listed above (filters=False): the filter backends would read the class's queryset,
    # whose model (Collection) is not the list's.
    @action(detail=True, methods=["get", "post"], filterset_class=CollectionDocumentFilter,
            ordering_fields=DOCUMENT_ORDERING, ordering=("created_at", "id"),
            parser_classes=[JSONParser, MultiPartParser], upload_limit_setting="CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES")
    def documents(self, request: Request, pk: str) -> Response:
        """GET: the collection's documents, oldest first (`?status=`, `?title=`, `?created_after=`,
        `?created_before=`; `?ordering=` by created_at, title or status, any other field a 400). POST:
        add a document as JSON text (`title`, `text`, `metadata`); it is chunked and embedded now and answered with
        its status (`ready`, or `failed` and why) (201; 409 if it was deleted meanwhile). Or upload a file as
        multipart/form-data (`file`; `title`, `metadata` as JSON, optional): it is stored and answered `queued`
        (202) while a background job reads, chunks and embeds it (its progress: `document_updated` events on
        /ws/events/). A file over CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES is a 413, one of a type no parser reads a 415.
        The same text or file again is the document already there (200), unchanged."""
        collection = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(self.filter_queryset(document_list(collection=collection)))
            return self.get_paginated_response(CollectionDocumentSerializer(page, many=True).data)
        if request.content_type.startswith("multipart/"):
            return self._document_upload(request, collection)
        serializer = CollectionDocumentWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document, created = document_add(collection=collection, actor=request.user, **serializer.validated_data)
        if document.status == CollectionDocument.Status.QUEUED:
            document = document_ingest(document, api_key=request_api_key(request))
            if document is None:
                raise Conflict("the document was deleted while it was being added", code="document_deleted")
        return Response(CollectionDocumentSerializer(document).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def _document_upload(self, request: Request, collection: Collection) -> Response:
        serializer = CollectionDocumentUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        document, created = document_upload(collection=collection, actor=request.user,
                                            upload=serializer.validated_data["file"],
                                            title=serializer.validated_data.get("title"),
                                            metadata=serializer.validated_data.get("metadata"),
                                            api_key=request_api_key(request))
        return Response(CollectionDocumentSerializer(document).data,
                        status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)

    def _document(self, collection: Collection, document_id: str) -> CollectionDocument:
        found = document_list(collection=collection).filter(
            pk=url_uuid(document_id, not_found="document not found")).first()
        if found is None:
            raise NotFound("document not found")
        return found

    @extend_schema(methods=["GET"], responses=CollectionDocumentSerializer, parameters=[DOCUMENT_ID])
    @extend_schema(methods=["DELETE"], responses={204: None}, parameters=[DOCUMENT_ID])
    @action(detail=True, methods=["get", "delete"], url_path=r"documents/(?P<document_id>[^/.]+)",
            filter_backends=[])
    def document(self, request: Request, pk: str, document_id: str) -> Response:
        """GET: one document. DELETE: the document with its chunks and their vectors."""
        document = self._document(self.get_object(), document_id)
        if request.method == "GET":
            return Response(CollectionDocumentSerializer(document).data)
        document_delete(document=document, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=SearchSerializer, responses=SearchResultSerializer)
    @action(detail=True, methods=["post"], filter_backends=[])
    def search(self, request: Request, pk: str) -> Response:
        """The chunks that best answer `query`, best first: `mode` hybrid (default), vector or keyword; `k`;
        `score_threshold`; `filters` on the documents' metadata; `rerank_model` reranks them. The query's embedding
        and the rerank are your LLM calls."""
        collection = self.get_object()
        serializer = SearchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        hits = collection_search(collection=collection, user=request.user, api_key=request_api_key(request),
                                 **serializer.validated_data)
        return Response(SearchResultSerializer({"results": hits}).data)
