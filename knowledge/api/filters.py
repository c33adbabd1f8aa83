"""The lists' filters: collections by `name` (a part of it) and `shared`, a collection's documents by `status` and
`title` (a part of it); both by a created_at range (core.api.filters)."""
import django_filters

from core.api.filters import CreatedRangeFilterSet
from knowledge.models import Collection, CollectionDocument


class CollectionFilter(CreatedRangeFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Collection
        fields = ("name", "shared")


class CollectionDocumentFilter(CreatedRangeFilterSet):
    title = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = CollectionDocument
        fields = ("status", "title")
