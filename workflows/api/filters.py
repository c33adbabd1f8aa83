import django_filters

from core.api.filters import CreatedRangeFilterSet
from workflows.models import (
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)


class ExecutionFilter(CreatedRangeFilterSet):
    template = django_filters.CharFilter(field_name="template__key", help_text="template key")
    api_key = django_filters.UUIDFilter(field_name="api_key__uid", help_text="id of the API key that started it")

    class Meta:
        model = WorkflowExecution
        fields = ("status", "workflow_type", "mode", "template", "definition", "conversation", "schedule",
                  "provider", "model", "error_type")


class TemplateFilter(CreatedRangeFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = WorkflowTemplate
        fields = ("key", "category", "is_builtin", "is_public", "name")


class DefinitionFilter(CreatedRangeFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    template = django_filters.CharFilter(field_name="template__key", help_text="key of the template it came from")

    class Meta:
        model = WorkflowDefinition
        fields = ("name", "template", "is_public")


class ScheduleFilter(CreatedRangeFilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    template = django_filters.CharFilter(field_name="template__key", help_text="template key")

    class Meta:
        model = WorkflowSchedule
        fields = ("name", "enabled", "template", "definition")
