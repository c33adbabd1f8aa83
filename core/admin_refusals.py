"""The API's refusals shown on an admin form: what a request serializer or a service (InvalidInput's details) refused,
each on the form's field its path starts with, the rest above the form. The admin's forms that write through the
services validate with the API's serializers and checks, so staff see the answer the API would give."""
import re

from django import forms

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
