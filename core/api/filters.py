"""Filters shared by every list: a created_at range (`created_after`, `created_before`, ISO 8601), booleans that
refuse what is neither true nor false, objects named by their id as given, and a `?ordering=` that refuses unknown
fields."""
from datetime import timezone as dt_timezone

import django_filters
from django import forms
from django.db import models
from django_filters.fields import IsoDateTimeField
from rest_framework import exceptions
from rest_framework.filters import OrderingFilter


class UTCIsoDateTimeField(IsoDateTimeField):
    """ISO 8601 accepts offsets up to ±23:59 and PostgreSQL only ±15:59: values are compared in UTC (what we
    store), and a time that cannot be expressed in UTC is a 400, not a database error."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return value
        try:
            return value.astimezone(dt_timezone.utc)
        except (OverflowError, ValueError):
            raise forms.ValidationError("date and time out of range", code="invalid") from None


class UTCIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField


class StrictBooleanField(forms.NullBooleanField):
    """`true` or `false` (or 1 and 0, in any case); empty is no filter. Another value is a 400 (like an unknown
    `?status=`): Django's NullBooleanField, with its select widget, reads it as no value, so the filter was
    silently dropped. A text widget hands the value over as it came."""

    widget = forms.TextInput

    def to_python(self, value):
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        known = {"true": True, "1": True, "false": False, "0": False}.get(str(value).strip().lower())
        if known is None:
            raise forms.ValidationError("must be true or false", code="invalid")
        return known


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class ListFilterSet(django_filters.FilterSet):
    """What every list's filters share: a model's BooleanField in Meta.fields is filtered by StrictBooleanFilter (as
    django-filter's own DRF FilterSet changes the boolean widget), and a foreign key by the id given, checked only
    for its form (a UUID): django-filter's ModelChoiceFilter looked the id up among every user's rows, so another
    user's id listed nothing (200) where an id nobody has was a 400, telling which ids exist. Now both list nothing,
    as `?template=<key>` and `?api_key=<id>` do."""

    FILTER_DEFAULTS = {**django_filters.FilterSet.FILTER_DEFAULTS,
                       models.BooleanField: {"filter_class": StrictBooleanFilter}}

    @classmethod
    def filter_for_lookup(cls, field, lookup_type):
        if isinstance(field, models.ForeignKey) and lookup_type == "exact":
            return super().filter_for_lookup(field.target_field, lookup_type)
        return super().filter_for_lookup(field, lookup_type)


class CreatedRangeFilterSet(ListFilterSet):
    created_after = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")


class StrictOrderingFilter(OrderingFilter):
    """DRF's OrderingFilter, except that an unknown `?ordering=` field is a 400 (like an unknown `?status=`)
    rather than silently ignored; the schema lists the fields each list accepts."""

    def remove_invalid_fields(self, queryset, fields, view, request):
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        unknown = [term for term in fields if term and term not in valid]
        if unknown:
            allowed = ", ".join(name for name, _ in self.get_valid_fields(queryset, view, {"request": request}))
            raise exceptions.ValidationError({self.ordering_param: [
                exceptions.ErrorDetail(f"unknown field {term.lstrip('-')!r}; one of: {allowed} (prefix - to "
                                       f"reverse)", code="invalid_choice") for term in unknown]})
        return valid

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        fields = getattr(view, "ordering_fields", None)
        if isinstance(fields, (list, tuple)):
            for parameter in parameters:
                parameter["description"] = (f"comma-separated fields to sort by, `-` to reverse; one of: "
                                            f"{', '.join(fields)} (any other is a 400)")
        return parameters
