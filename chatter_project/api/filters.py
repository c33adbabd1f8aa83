"""Filters shared by every list: a created_at range (`created_after`, `created_before`, ISO 8601)."""
import django_filters


class CreatedRangeFilterSet(django_filters.FilterSet):
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
