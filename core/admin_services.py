"""The admin through the services the API uses: its forms validate with the API's serializers and checks and show
their refusals (form_refusals_show), so staff see the answer the API would give; its deletes, one or many, go through
the app's service (DeletesThroughService), so each writes its audit row and sends its signals."""
import re

from django import forms
from django.contrib import admin

from core.errors import error_details


def form_refusals_show(form: forms.BaseForm, details, *, fields_of: dict[str, str] | None = None) -> None:
    """Add each refusal in `details` (DRF's error map, or the one error shape's items) to `form`. `fields_of` names
    the form field of a path that is no field's own (a graph's `nodes[2].type` is the `graph` field's)."""
    for item in error_details(details, code="invalid"):
        head = re.split(r"[.\[]", item["path"], maxsplit=1)[0]
        field = (fields_of or {}).get(head, head)
        if field not in form.fields:
            field = None
        where = item["path"] if item["path"] and item["path"] != field else ""
        form.add_error(field, f"{where}: {item['message']}" if where else item["message"])


class DeletesThroughService(admin.ModelAdmin):
    """A ModelAdmin whose delete_model calls its app's service: a bulk delete deletes each row through it too, not
    the queryset at once."""

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset:
            self.delete_model(request, obj)
