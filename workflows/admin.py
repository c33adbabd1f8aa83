from django import forms
from django.contrib import admin, messages
from django.template.loader import render_to_string

from conversations.models import Message
from core.admin_services import DeletesThroughService, form_refusals_show
from core.errors import ChatterError, Conflict
from workflows.models import (
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ProviderAttempt,
    ToolCall,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)
from workflows.services.definitions import definition_delete, definition_update
from workflows.services.runs import execution_cancel
from workflows.services.schedules import SCHEDULE_EDITABLE, schedule_delete, schedule_update, schedule_validate
from workflows.services.templates import template_create, template_delete, template_update
from workflows.template_forms import DefinitionAdminForm, TemplateAdminForm
from workflows.timeline import run_timeline

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost")


def field_names(model) -> tuple[str, ...]:
    return tuple(field.name for field in model._meta.concrete_fields)


class NoAddMixin:
    """Rows the engine writes: never created by hand."""

    def has_add_permission(self, request, obj=None):
        return False


class ReadOnlyMixin(NoAddMixin):
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LedgerMixin(ReadOnlyMixin):
    """Rows that usage is summed from (runs, their nodes, calls and tool calls): written by the engine only, so
    their pages are read-only (no Save button); deleting one here would take spent tokens out of every
    aggregate, so they go only with their owner."""


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False


# --- templates and definitions ----------------------------------------------------------------------------
@admin.register(WorkflowTemplate)
class WorkflowTemplateAdmin(DeletesThroughService):
    """Templates; analytics.admin adds their analytics to these pages. Added, changed and deleted through the services
    the API uses (validated as it validates them: workflows.template_forms; audited; the version bumped by a graph
    changed), whoever owns them."""

    form = TemplateAdminForm
    list_display = ("key", "name", "category", "is_builtin", "is_public", "owner", "version", "updated_at")
    list_filter = ("is_builtin", "is_public", "category", "updated_at")
    list_select_related = ("owner",)
    search_fields = ("key", "name", "description")
    raw_id_fields = ("owner",)
    readonly_fields = ("is_builtin", "version", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # As in the API: the key is fixed at creation, and a template stays its owner's.
        return (*super().get_readonly_fields(request, obj), *(("key", "owner") if obj is not None else ()))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.template = obj  # a class of this request's
        return form

    # Built-ins are seeded from code; editing them here would be overwritten or break the seed.
    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and not (obj and obj.is_builtin)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj and obj.is_builtin)

    def save_model(self, request, obj, form, change):
        if change:
            if not form.service_values:
                return
            saved = template_update(template=WorkflowTemplate.objects.get(pk=obj.pk), actor=request.user,
                                    as_staff=True, **form.service_values)
        else:
            saved = template_create(owner=form.cleaned_data["owner"], actor=request.user, **form.service_values)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        template_delete(template=obj, actor=request.user, as_staff=True)


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(DeletesThroughService):
    form = DefinitionAdminForm
    list_display = ("name", "owner", "template", "version", "is_public", "created_at", "updated_at")
    list_filter = ("is_public", "updated_at", "created_at")
    list_select_related = ("owner", "template")
    search_fields = ("id__exact", "name", "description", "owner__username")
    raw_id_fields = ("owner", "template")
    date_hierarchy = "created_at"
    # The graph is validated and versioned by definition_create/definition_update, never edited raw here; the rest
    # is changed through definition_update too (audited), as the API changes it.
    readonly_fields = ("owner", "template", "nodes", "edges", "version", "created_at", "updated_at")

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        if form.service_values:
            definition_update(definition=WorkflowDefinition.objects.get(pk=obj.pk), actor=request.user,
                              as_staff=True, **form.service_values)
            obj.refresh_from_db()

    def delete_model(self, request, obj):
        definition_delete(definition=obj, actor=request.user, as_staff=True)


class WorkflowScheduleAdminForm(forms.ModelForm):
    """A schedule's editable fields, checked as the API checks them (workflows.services.schedules.schedule_validate)
    before anything is saved: a refusal is shown on the field it names."""

    webhook = forms.URLField(max_length=500, required=False, assume_scheme="https")  # (typed without its scheme)

    class Meta:
        model = WorkflowSchedule
        fields = SCHEDULE_EDITABLE

    changes: dict  # what schedule_update is given: the fields whose values differ from the stored row's

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = WorkflowSchedule.objects.select_related("template", "definition").get(pk=self.instance.pk)
        self.changes = {field: cleaned[field] for field in SCHEDULE_EDITABLE
                        if field in cleaned and cleaned[field] != getattr(candidate, field)}
        for field, value in self.changes.items():
            setattr(candidate, field, value)
        try:
            schedule_validate(owner=candidate.owner, schedule=candidate)
        except ChatterError as refused:
            if refused.details:
                form_refusals_show(self, refused.details)
            else:
                self.add_error(None, refused.message)
        return cleaned


@admin.register(WorkflowSchedule)
class WorkflowScheduleAdmin(DeletesThroughService):
    """Schedules are made over the API (or as LangGraph crons) by their owners; staff change and delete them here
    through the same services (checked as the API checks them, the next run recomputed, audited)."""

    form = WorkflowScheduleAdminForm
    list_display = ("name", "owner", "template", "definition", "cron", "timezone", "enabled", "next_run_at",
                    "last_run_at", "last_error")
    list_filter = ("enabled", "timezone", "next_run_at", "last_run_at")
    list_select_related = ("owner", "template", "definition")
    search_fields = ("name", "cron", "owner__username", "template__key", "definition__name")
    # What a schedule runs, and for whom, is fixed once it exists (schedule_update).
    readonly_fields = ("owner", "template", "definition", "graph", "conversation", "next_run_at", "last_run_at",
                       "last_execution", "last_error", "last_error_at", "created_at", "updated_at")
    fields = ("name", "owner", "template", "definition", "graph", "conversation", *SCHEDULE_EDITABLE[1:],
              *readonly_fields[5:])

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change) -> None:
        if form.changes:
            schedule_update(schedule=WorkflowSchedule.objects.get(pk=obj.pk), actor=request.user,
                            ip=request.META.get("REMOTE_ADDR"), **form.changes)
        obj.refresh_from_db()

    def delete_model(self, request, obj) -> None:
        schedule_delete(schedule=obj, actor=request.user)  # (audited: schedule.deleted, by the staff member)


# --- runs ---------------------------------------------------------------------------------------------------
class NodeExecutionInline(ReadOnlyInline):
    model = NodeExecution
    fields = readonly_fields = ("index", "node_id", "node_type", "status", "duration_ms", *USAGE_FIELDS,
                                "llm_calls", "tool_calls", "error_message")


class ToolCallInline(ReadOnlyInline):
    model = ToolCall
    fields = readonly_fields = ("node_id", "tool", "server", "arguments", "result", "ok", "error", "duration_ms",
                                "created_at")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("server")


class LLMCallInline(ReadOnlyInline):
    model = LLMCall
    fields = readonly_fields = ("provider", "model", "deployment", *USAGE_FIELDS, "cached_prompt_tokens",
                                "reasoning_tokens", "estimated", "duration_ms", "created_at")


class ProviderAttemptInline(ReadOnlyInline):
    """A routed call's tries, one per deployment: the one that answered, and those that failed before it and why."""

    model = ProviderAttempt
    fields = readonly_fields = ("deployment", "model", "ok", "status_code", "error_type", "error", "cooldown_s",
                                "duration_ms", "created_at")


class ExecutionEventInline(ReadOnlyInline):
    model = ExecutionEvent
    fields = readonly_fields = ("seq", "event", "data", "created_at")
    classes = ["collapse"]  # the whole event log: long, and last on the page


class RunMessageInline(ReadOnlyInline):
    """The messages the run saved (the user's and the reply, for a chat turn)."""

    model = Message
    fk_name = "execution"
    verbose_name_plural = "messages saved by this run"
    # Fits the run's page at 1400 px; each message's every token field is on its own page (the change link).
    fields = readonly_fields = ("conversation", "sequence", "role", "content", "total_tokens", "cost", "model_used",
                                "error_message")
    show_change_link = True


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(LedgerMixin, admin.ModelAdmin):
    # Fits 1366 px with tokens and cost in view: a short id, what ran, and the figures; the rest is on the page.
    list_display = ("short_id", "status", "what", "owner", "model", "total_tokens", "cost", "execution_time_ms",
                    "created_at")
    list_filter = ("status", "workflow_type", "mode", "provider", "model", "error_type",
                   ("template", admin.RelatedOnlyFieldListFilter), "cancel_requested", "created_at", "completed_at")
    list_select_related = ("owner", "template")
    search_fields = ("id__exact", "correlation_id", "trace_id", "error_type", "error_message", "owner__username",
                     "template__key")
    date_hierarchy = "created_at"
    # Everything on a run is written by the engine; staff act on it through the cancel action.
    readonly_fields = (*field_names(WorkflowExecution), "timeline")
    inlines = [NodeExecutionInline, ToolCallInline, LLMCallInline, ProviderAttemptInline, RunMessageInline,
               ExecutionEventInline]
    actions = ["cancel_runs"]
    EXECUTION_FIELDSETS = (
        ("Run", ("id", "status", "workflow_type", "mode", "owner", "template", "definition", "definition_version",
                 "conversation", "schedule", "provider", "model")),
        ("Timeline", ("timeline",)),
        ("Usage", ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "llm_calls", "tool_calls")),
        ("Timing", ("created_at", "started_at", "completed_at", "execution_time_ms", "waiting_until")),
        ("Outcome", ("error_type", "error_message", "cancel_requested", "input_data", "output_data")),
        ("Trace", ("correlation_id", "trace_id")),  # trace_id: the run's spans' in the operator's tracing backend
    )

    @admin.display(description="id", ordering="id")
    def short_id(self, execution: WorkflowExecution) -> str:
        return str(execution.pk)[:8]

    @admin.display(description="what", ordering="template__key")
    def what(self, execution: WorkflowExecution) -> str:
        what = execution.template.key if execution.template else execution.workflow_type
        if execution.status == WorkflowExecution.Status.WAITING:  # filter by status `waiting`: who waits on what
            asked = [q.get("prompt", "") for q in (execution.output_data or {}).get("input_required") or []]
            return f"{what}: asks {'; '.join(asked)[:80]!r}"
        return what

    @admin.display(description="timeline")
    def timeline(self, execution: WorkflowExecution) -> str:
        """Its nodes, LLM calls and tool calls on one time axis (workflows.timeline)."""
        return render_to_string("admin/workflows/timeline.html", {"timeline": run_timeline(execution)})

    def get_fieldsets(self, request, obj=None):
        listed = {name for _, names in self.EXECUTION_FIELDSETS for name in names}
        rest = tuple(name for name in self.readonly_fields if name not in listed)  # config, graph, and any new field
        return [*((title, {"fields": names}) for title, names in self.EXECUTION_FIELDSETS),
                ("More", {"fields": rest, "classes": ["collapse"]})]

    def has_cancel_permission(self, request) -> bool:
        """The cancel action's permission (the admin's custom action permissions): who may change runs, though
        nothing on a run's page is editable."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        cancelled = skipped = 0
        for execution in queryset:
            try:
                execution_cancel(execution=execution, actor=request.user)
            except Conflict:  # already terminal
                skipped += 1
            else:
                cancelled += 1
        self.message_user(
            request, f"{cancelled} run(s) cancelled or asked to stop; {skipped} already finished, skipped.",
            messages.SUCCESS if cancelled else messages.WARNING,
        )


@admin.register(NodeExecution)
class NodeExecutionAdmin(LedgerMixin, admin.ModelAdmin):
    list_display = ("node_id", "index", "node_type", "status", "execution", "duration_ms", *USAGE_FIELDS,
                    "llm_calls", "tool_calls", "started_at")
    list_filter = ("status", "node_type", "started_at")
    list_select_related = ("execution",)
    search_fields = ("node_id", "error_message", "execution__id__exact")
    date_hierarchy = "started_at"
    readonly_fields = field_names(NodeExecution)


@admin.register(ToolCall)
class ToolCallAdmin(LedgerMixin, admin.ModelAdmin):
    list_display = ("tool", "server", "node_id", "ok", "duration_ms", "execution", "created_at")
    list_filter = ("ok", "tool", "created_at")
    list_select_related = ("execution", "server")
    search_fields = ("tool", "node_id", "error", "execution__id__exact")
    date_hierarchy = "created_at"
    readonly_fields = field_names(ToolCall)


@admin.register(LLMCall)
class LLMCallAdmin(LedgerMixin, admin.ModelAdmin):
    list_display = ("__str__", "provider", "model", "deployment", *USAGE_FIELDS, "cached_prompt_tokens",
                    "reasoning_tokens", "estimated", "provider_cost", "unpriced", "duration_ms", "execution",
                    "created_at")
    list_filter = ("provider", "model", "deployment", "estimated", "provider_cost", "unpriced", "created_at")
    list_select_related = ("execution",)
    search_fields = ("provider", "model", "deployment", "execution__id__exact")
    date_hierarchy = "created_at"
    readonly_fields = field_names(LLMCall)


@admin.register(ProviderAttempt)
class ProviderAttemptAdmin(LedgerMixin, admin.ModelAdmin):
    """Every try of a routed call (CHATTER_DEPLOYMENTS): filter by deployment and outcome to see which fail and why;
    the usage dashboard sums spend and errors per deployment."""

    list_display = ("deployment", "model", "ok", "status_code", "error_type", "cooldown_s", "duration_ms",
                    "execution", "created_at")
    list_filter = ("ok", "deployment", "model", "error_type", "status_code", "created_at")
    list_select_related = ("execution",)
    search_fields = ("deployment", "model", "error", "execution__id__exact")
    date_hierarchy = "created_at"
    readonly_fields = field_names(ProviderAttempt)


@admin.register(ExecutionEvent)
class ExecutionEventAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("event", "seq", "execution", "created_at")
    list_filter = ("event", "created_at")
    list_select_related = ("execution",)
    search_fields = ("event", "execution__id__exact")
    date_hierarchy = "created_at"
