"""/api/v1/datasets/: your datasets and their items (another user's is a 404); import CSV or JSONL, export them,
add a run as an item."""
from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.api.filters import CreatedRangeFilterSet
from core.api.viewsets import OwnedViewSet, url_uuid
from core.errors import NotFound
from datasets.api.renderers import CSVRenderer, JSONLRenderer
from datasets.api.serializers import (
    DatasetExportQuerySerializer,
    DatasetImportSerializer,
    DatasetItemSerializer,
    DatasetItemWriteSerializer,
    DatasetSerializer,
    DatasetWriteSerializer,
)
from datasets.models import Dataset
from datasets.selectors import dataset_list
from datasets.services import (
    dataset_create,
    dataset_delete,
    dataset_export,
    dataset_import,
    dataset_item_create,
    dataset_item_delete,
    dataset_item_from_run,
    dataset_update,
)

class DatasetFilter(CreatedRangeFilterSet):
    class Meta:
        model = Dataset
        fields = ("name",)


class DatasetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OwnedViewSet):
    key_scope = "chat"
    queryset = Dataset.objects.none()
    serializer_class = DatasetSerializer
    filterset_class = DatasetFilter
    ordering_fields = ("name", "created_at", "updated_at")
    ordering = ("name",)
    not_found = "dataset not found"

    def get_queryset(self):
        return dataset_list(user=self.request.user)

    def _shown(self, dataset: Dataset) -> dict:
        return DatasetSerializer(self.get_queryset().get(pk=dataset.pk)).data

    @extend_schema(request=DatasetWriteSerializer, responses={201: DatasetSerializer})
    def create(self, request: Request) -> Response:
        serializer = DatasetWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dataset = dataset_create(owner=request.user, **serializer.validated_data)
        return Response(self._shown(dataset), status=status.HTTP_201_CREATED)

    @extend_schema(request=DatasetWriteSerializer, responses=DatasetSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        dataset = self.get_object()
        serializer = DatasetWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(self._shown(dataset_update(dataset=dataset, **serializer.validated_data)))

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        dataset_delete(dataset=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(methods=["GET"], responses=DatasetItemSerializer(many=True))
    @extend_schema(methods=["POST"], request=DatasetItemWriteSerializer, responses={201: DatasetItemSerializer})
    @action(detail=True, methods=["get", "post"], filter_backends=[])
    def items(self, request: Request, pk: str) -> Response:
        """GET: the items, oldest first (paginated); POST: add one, or add a run (`execution`)."""
        dataset = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(dataset.items.order_by("created_at", "id"))
            return self.get_paginated_response(DatasetItemSerializer(page, many=True).data)
        serializer = DatasetItemWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "execution" in data:
            item = dataset_item_from_run(dataset=dataset, execution_id=data["execution"], metadata=data.get("metadata"))
        else:
            item = dataset_item_create(dataset=dataset, input=data["input"], metadata=data.get("metadata"),
                                       expected_output=data.get("expected_output"))
        return Response(DatasetItemSerializer(item).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["DELETE"], responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"items/(?P<item>[0-9a-f-]{36})", filter_backends=[],
            pagination_class=None)
    def item(self, request: Request, pk: str, item: str) -> Response:
        dataset = self.get_object()
        if not dataset_item_delete(dataset=dataset, item_id=url_uuid(item, not_found="item not found")):
            raise NotFound("item not found")
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=DatasetImportSerializer, responses={201: DatasetItemSerializer(many=True)})
    @action(detail=True, methods=["post"], url_path="import", filter_backends=[], pagination_class=None)
    def import_items(self, request: Request, pk: str) -> Response:
        """CSV (header: input, expected_output, metadata) or JSONL: all lines or none."""
        dataset = self.get_object()
        serializer = DatasetImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        items = dataset_import(dataset=dataset, **serializer.validated_data)
        return Response({"imported": len(items)}, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[DatasetExportQuerySerializer], responses={200: OpenApiTypes.STR})
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None,
            renderer_classes=[JSONLRenderer, CSVRenderer])
    def export(self, request: Request, pk: str) -> Response:
        """Every item as JSONL (default) or CSV (`?format=csv`): what import reads back."""
        dataset = self.get_object()
        kind = request.accepted_renderer.format
        return Response(dataset_export(dataset=dataset, format=kind),
                        headers={"Content-Disposition": f'attachment; filename="dataset-{dataset.pk}.{kind}"'})
