from django.contrib import admin
from django.db.models import Count

from datasets.models import Dataset, DatasetItem


class DatasetItemInline(admin.TabularInline):
    model = DatasetItem
    fields = ("input", "expected_output", "metadata", "source_execution", "created_at")
    readonly_fields = ("source_execution", "created_at")
    raw_id_fields = ("source_execution",)
    extra = 0


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "item_count", "created_at", "updated_at")
    search_fields = ("name", "description", "owner__username")
    list_select_related = ("owner",)
    inlines = (DatasetItemInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(item_count=Count("items"))

    @admin.display(ordering="item_count", description="items")
    def item_count(self, dataset: Dataset) -> int:
        return dataset.item_count


@admin.register(DatasetItem)
class DatasetItemAdmin(admin.ModelAdmin):
    list_display = ("dataset", "id", "source_execution", "created_at")
    list_select_related = ("dataset",)
    search_fields = ("dataset__name",)
    raw_id_fields = ("source_execution",)
