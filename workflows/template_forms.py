"""The admin's forms of templates and definitions: their fields checked as the API checks them (its serializers,
then the services' own checks), each refusal on its field, so staff cannot save what the API would refuse (a graph
with an unknown node type, an edge to nowhere) and learn it only when it runs. What they give the services is
`service_values`: all of it when a template is added, the fields changed on a change."""
from django import forms

from core.admin_services import form_refusals_show
from core.errors import InvalidInput
from workflows.api.serializers import (
    DefinitionUpdateSerializer,
    TemplateUpdateSerializer,
    TemplateWriteSerializer,
)
from workflows.models import WorkflowDefinition, WorkflowTemplate
from workflows.services.templates import template_check

TEMPLATE_VALUES = ("key", "name", "description", "category", "params", "graph", "is_public")
DEFINITION_VALUES = ("name", "description", "metadata", "is_public")


def _given(form: forms.ModelForm, names, *, new: bool) -> dict:
    """The form's values of `names` (on a change, those changed), an empty JSON field (None) left out."""
    cleaned = form.cleaned_data
    return {name: cleaned[name] for name in names
            if name in form.fields and (new or name in form.changed_data) and cleaned.get(name) is not None}


class TemplateAdminForm(forms.ModelForm):
    # Set per request by WorkflowTemplateAdmin.get_form: the template changed, None when one is added.
    template: WorkflowTemplate | None = None

    class Meta:
        model = WorkflowTemplate
        fields = ("key", "name", "description", "category", "owner", "is_public", "params", "graph")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "owner" in self.fields:  # a template is added as one user's own (the API's template_create)
            self.fields["owner"].required = True

    def clean(self) -> dict:
        cleaned = super().clean()
        self.service_values = {}
        if self.errors:  # each field's own error first
            return cleaned
        new = self.template is None
        serializer = (TemplateWriteSerializer if new else TemplateUpdateSerializer)(
            data=_given(self, TEMPLATE_VALUES, new=new))
        if not serializer.is_valid():
            form_refusals_show(self, serializer.errors)
            return cleaned
        values = dict(serializer.validated_data)
        try:
            template_check(owner=cleaned["owner"] if new else self.template.owner, template=self.template, **values)
        except InvalidInput as refused:
            form_refusals_show(self, refused.details, fields_of={"nodes": "graph", "edges": "graph"})
            return cleaned
        self.service_values = values
        return cleaned


class DefinitionAdminForm(forms.ModelForm):
    """A definition's name, description, metadata and sharing (its graph is changed through the API, which
    validates and versions it)."""

    class Meta:
        model = WorkflowDefinition
        fields = DEFINITION_VALUES

    def clean(self) -> dict:
        cleaned = super().clean()
        self.service_values = {}
        if self.errors:
            return cleaned
        serializer = DefinitionUpdateSerializer(data=_given(self, DEFINITION_VALUES, new=False))
        if not serializer.is_valid():
            form_refusals_show(self, serializer.errors)
            return cleaned
        self.service_values = dict(serializer.validated_data)
        return cleaned
