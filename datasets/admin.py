from django.contrib import admin, messages
from django.db.models import Count

from core.admin_services import DeletesThroughService
from core.errors import Conflict
from datasets.models import Dataset, DatasetItem
from datasets.selectors import dataset_users
from datasets.services import dataset_delete, dataset_item_delete


class DatasetItemInline(admin.TabularInline):
    model = DatasetItem
    fields = ("input", "expected_output", "metadata", "source_execution", "created_at")
    readonly_fields = ("source_execution", "created_at")
    raw_id_fields = ("source_execution",)
    extra = 0

    def has_delete_permission(self, request, obj=None) -> bool:  # obj: the dataset shown
        return super().has_delete_permission(request, obj) and not (obj is not None and dataset_users(
            dataset_id=obj.pk))


class DeletesUnlessInUse(DeletesThroughService):
    """A dataset, or an item, is deleted through its service, which refuses while an experiment in progress reads the
    dataset (as the API answers 409 dataset_in_use): its page offers no delete then, and a bulk delete keeps it."""

    def dataset_of(self, obj):
        raise NotImplementedError

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj is not None and dataset_users(
            dataset_id=self.dataset_of(obj).pk))

    def delete_queryset(self, request, queryset) -> None:
        kept = 0
        for obj in queryset:
            try:
                self.delete_model(request, obj)
            except Conflict:
                kept += 1
        if kept:
            self.message_user(request, f"{kept} kept: an experiment in progress reads their dataset.",
                              messages.WARNING)


@admin.register(Dataset)
class DatasetAdmin(DeletesUnlessInUse):
    list_display = ("name", "owner", "item_count", "created_at", "updated_at")
    search_fields = ("name", "description", "owner__username")
    list_select_related = ("owner",)
    inlines = (DatasetItemInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(item_count=Count("items"))

    @admin.display(ordering="item_count", description="items")
    def item_count(self, dataset: Dataset) -> int:
        return dataset.item_count

    def dataset_of(self, obj: Dataset) -> Dataset:
        return obj

    def delete_model(self, request, obj: Dataset) -> None:
        dataset_delete(dataset=obj)


@admin.register(DatasetItem)
class DatasetItemAdmin(DeletesUnlessInUse):
    list_display = ("dataset", "id", "source_execution", "created_at")
    list_select_related = ("dataset",)
    search_fields = ("dataset__name",)
    raw_id_fields = ("source_execution",)

    def dataset_of(self, obj: DatasetItem) -> Dataset:
        return obj.dataset

    def delete_model(self, request, obj: DatasetItem) -> None:
        dataset_item_delete(dataset=obj.dataset, item_id=obj.pk)
