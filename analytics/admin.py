import uuid
from datetime import timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils import timezone

from analytics.api.serializers import PriceWriteSerializer
from analytics.charts import column_chart, row_chart
from analytics.models import ModelPrice, TemplateAnalytics, UsageRollup
from analytics.operations_admin import operations_view
from analytics.prices import price_checked, price_create, price_update
from analytics.prompt_versions import prompt_version_report
from analytics.selectors import (
    templates_with_analytics,
    usage_by_deployment,
    usage_cost_by_group,
    usage_by_day,
    usage_report,
    usage_report_page,
)
from analytics.tool_usage import tool_usage_report
from budgets.models import Budget
from budgets.services import budgets_current
from core.admin_services import form_refusals_show
from core.errors import InvalidInput
from core.money import dollars
from keys.models import ApiToken
from prompts.admin import PromptAdmin
from prompts.models import Prompt
from workflows.admin import WorkflowTemplateAdmin
from workflows.models import WorkflowTemplate

DASHBOARD_MAX_DAYS = 366


@admin.register(TemplateAnalytics)
class TemplateAnalyticsAdmin(admin.ModelAdmin):
    list_display = ("template", "slot", "total_executions", "successful_executions", "failed_executions",
                    "cancelled_executions", "average_execution_time_ms", "prompt_tokens", "completion_tokens",
                    "total_tokens", "total_cost", "last_used_at")
    list_filter = ("last_used_at", "last_success_at", "last_failure_at")
    list_select_related = ("template",)
    search_fields = ("template__key", "template__name")
    # Counters (I2) are kept by analytics.receivers and reconcile_aggregates, never by hand. Each row is a slot of a
    # template's figures (their sums), made when the first run picking it ends; the template pages show the sums.
    readonly_fields = ("template", "slot", "total_executions", "successful_executions", "failed_executions",
                       "cancelled_executions", "total_execution_time_ms", "average_execution_time_ms",
                       "prompt_tokens", "completion_tokens", "total_tokens", "total_cost", "last_used_at",
                       "last_success_at", "last_failure_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # every field is a counter: a read-only page, without a Save button


def _template_figure(name: str, description: str = ""):
    @admin.display(description=description or name.replace("_", " "), ordering=name)
    def figure(self, template):
        return getattr(template, name)  # annotated by templates_with_analytics

    return figure


class TemplateWithAnalyticsAdmin(WorkflowTemplateAdmin):
    """The template pages with the template's analytics (docs/usage.md#the-back-office-admin-and-analytics), read in
    the same query as the template: a template that never ran shows zeros."""

    SHOWN = ("total_executions", "successful_executions", "failed_executions", "cancelled_executions",
             "average_execution_time_ms", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost",
             "last_used_at", "last_success_at", "last_failure_at")
    list_display = ("key", "name", "category", "is_builtin", "is_public", "owner", "version", "runs", "failed_runs",
                    "total_tokens", "total_cost", "last_used_at", "updated_at")
    list_filter = ("is_builtin", "is_public", "category", "analytics__last_used_at", "updated_at")
    readonly_fields = (*WorkflowTemplateAdmin.readonly_fields, *SHOWN)
    # One column or page field per figure, each reading its annotation.
    runs = _template_figure("total_executions", "runs")
    failed_runs = _template_figure("failed_executions", "failed")
    total_executions = _template_figure("total_executions")
    successful_executions = _template_figure("successful_executions")
    failed_executions = _template_figure("failed_executions")
    cancelled_executions = _template_figure("cancelled_executions")
    average_execution_time_ms = _template_figure("average_execution_time_ms")
    prompt_tokens = _template_figure("prompt_tokens")
    completion_tokens = _template_figure("completion_tokens")
    total_tokens = _template_figure("total_tokens")
    total_cost = _template_figure("total_cost")
    last_used_at = _template_figure("last_used_at")
    last_success_at = _template_figure("last_success_at")
    last_failure_at = _template_figure("last_failure_at")

    def get_queryset(self, request):
        return templates_with_analytics(super().get_queryset(request))

    def get_fieldsets(self, request, obj=None):
        fields = [name for name in self.get_fields(request, obj) if name not in self.SHOWN]
        return [(None, {"fields": fields}), *([("Analytics", {"fields": self.SHOWN})] if obj is not None else [])]


admin.site.unregister(WorkflowTemplate)
admin.site.register(WorkflowTemplate, TemplateWithAnalyticsAdmin)


PRICE_VALUES = ("provider", "model_pattern", "input_per_million", "cached_input_per_million", "output_per_million",
                "per_call", "effective_from", "is_active")


class PriceAdminForm(forms.ModelForm):
    """A new price row checked as the API checks one (its serializer, then analytics.prices.price_checked), each
    refusal on its field; on a price's own page only `is_active` is a field."""

    class Meta:
        model = ModelPrice
        fields = PRICE_VALUES
        help_texts = {"effective_from": "empty: now", "per_call": "an MCP tool's (provider mcp) price per call",
                      "input_per_million": "a model's (not an MCP tool's)",
                      "output_per_million": "a model's (not an MCP tool's)"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("input_per_million", "output_per_million", "effective_from"):
            if name in self.fields:  # required or not by the kind of price (price_checked says), now by default
                self.fields[name].required = False

    def clean(self) -> dict:
        cleaned = super().clean()
        self.service_values = {}
        if self.errors:  # each field's own error first
            return cleaned
        given = {name: cleaned[name] for name in PRICE_VALUES if name in self.fields and cleaned.get(name) is not None}
        new = "provider" in self.fields  # (a row's own page has is_active alone)
        serializer = PriceWriteSerializer(data=given, partial=not new)
        if not serializer.is_valid():
            form_refusals_show(self, serializer.errors)
            return cleaned
        if new:
            try:
                price_checked(**serializer.validated_data)
            except InvalidInput as refused:
                form_refusals_show(self, refused.details)
                return cleaned
        self.service_values = dict(serializer.validated_data)
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices as the API keeps them (docs/api/rest.md): a change of price is a new row from its effective_from, so
    the calls priced before keep theirs; a row's figures and dates are history, only `is_active` changes (retiring or
    restoring it); nothing is deleted. Every write is analytics.prices' (audited price.changed)."""

    form = PriceAdminForm
    list_display = ("provider", "model_pattern", "input_per_million", "cached_input_per_million",
                    "output_per_million", "per_call", "effective_from", "is_active", "created_at")
    list_filter = ("provider", "is_active", "effective_from")
    search_fields = ("provider", "model_pattern")
    date_hierarchy = "effective_from"

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*(name for name in PRICE_VALUES if name != "is_active"), "created_at", "new_price")

    @admin.display(description="change the price")
    def new_price(self, price: ModelPrice) -> str:
        """A link to a new row of this price's provider and pattern, its figures to start from."""
        values = {name: getattr(price, name) for name in PRICE_VALUES
                  if name not in ("effective_from", "is_active") and getattr(price, name) is not None}
        return format_html('<a href="{}?{}">Add a new price from a date</a> (this one keeps the calls priced by it)',
                           reverse("admin:analytics_modelprice_add"), urlencode(values))

    def has_delete_permission(self, request, obj=None):
        return False  # history: retire a price (is_active) instead, as the API does

    def save_model(self, request, obj, form, change):
        if change:
            if "is_active" in form.changed_data:
                price_update(price=obj, actor=request.user, is_active=form.service_values["is_active"])
            return
        made = price_create(actor=request.user, **form.service_values)
        obj.pk = made.pk
        obj.refresh_from_db()


class DashboardFilter(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    owner = forms.CharField(required=False, max_length=150, help_text="a username; empty: everyone")

    @classmethod
    def of(cls, query) -> "DashboardFilter":
        """The last 30 days (UTC) unless the query says otherwise."""
        today = timezone.now().date()
        return cls({"start": today - timedelta(days=29), "end": today, **query.dict()})

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start is None or end is None:
            return data  # the field's own error says why
        if start > end:
            raise forms.ValidationError("the start is after the end")
        if (end - start).days >= DASHBOARD_MAX_DAYS:
            raise forms.ValidationError(f"at most {DASHBOARD_MAX_DAYS} days at once")
        if data.get("owner"):
            user_model = get_user_model()
            data["owner"] = user_model.objects.filter(**{user_model.USERNAME_FIELD: data["owner"]}).first()
            if data["owner"] is None:
                self.add_error("owner", "no such user")
        else:
            data["owner"] = None
        return data


def money(value) -> str:
    return dollars(value)


def money_axis(value) -> str:
    return "$" + format(Decimal(value).normalize(), "f")


def count_axis(value) -> str:
    return format(Decimal(value).normalize(), ",f")


@admin.register(UsageRollup)
class UsageDashboardAdmin(admin.ModelAdmin):
    """The staff dashboard (docs/usage.md#the-back-office-admin-and-analytics): usage and cost over time and by model,
    read from the usage rollups. Its changelist is the dashboard; the rows themselves are written only by
    analytics.receivers and `reconcile_aggregates --fix`."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [path("operations/", self.admin_site.admin_view(self.operations_view),
                     name="analytics_operations"), *super().get_urls()]

    def operations_view(self, request):
        """The operations dashboard (analytics.operations_admin): the last hours' runs, latency and errors."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return operations_view(request, admin_site=self.admin_site, opts=self.model._meta, budget_bars=_budget_bars)

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = DashboardFilter.of(request.GET)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Usage dashboard",
                   "form": form}
        if form.is_valid():
            context.update(self._figures(**form.cleaned_data))
        return TemplateResponse(request, "admin/analytics/dashboard.html", {**context, **(extra_context or {})})

    @staticmethod
    def _figures(*, start, end, owner) -> dict:
        scope = {"owner_ids": None if owner is None else [owner.pk], "start": start, "end": end}
        days = usage_by_day(**scope)
        models = list(usage_report(group_by="model", **scope))
        templates = list(usage_report(group_by="template", **scope)[:10])
        conversations = usage_report_page(group_by="conversation", limit=10, **scope).rows
        totals = {name: sum(day[name] for day in days) for name in UsageRollup.COUNTERS}  # every day is there
        return {
            "start": start, "end": end, "owner": owner, "totals": totals,
            "days": days, "models": models, "templates": templates, "conversations": conversations,
            "cost_by_day": _by_day(days, "cost", money_axis),
            "tokens_by_day": _by_day(days, "total_tokens", count_axis),
            "runs_by_day": _by_day(days, "executions", count_axis),
            "cost_by_model": row_chart([(f"{m['provider']}/{m['model']}", m["n_cost"]) for m in models],
                                       format_value=money),
            "cost_by_key": row_chart([(k["api_key__name"] or (f"{k['api_key__prefix']}…" if k["api_key__prefix"]
                                                               else "(no key)"), k["n_cost"])
                                      for k in usage_report(group_by="key", **scope)[:10]], format_value=money),
            "cost_by_group": row_chart(usage_cost_by_group(**scope)[:10], format_value=money),
            "budget_bars": _budget_bars(),
            "deployments": usage_by_deployment(**scope),
            **_tool_figures(start=start, end=end, owner=owner),
        }


def _tool_figures(*, start, end, owner) -> dict:
    """Tool calls per tool and per MCP server (analytics.tool_usage), the 10 most called of each."""
    scope = {"start": start, "end": end, "owner_ids": None if owner is None else [owner.pk]}
    by_tool = tool_usage_report(group_by="tool", **scope)[:10]
    by_server = tool_usage_report(group_by="server", **scope)[:10]
    return {"tools_by_tool": by_tool, "tool_tables": [("By tool", by_tool, "tools-by-tool"),
                                                      ("By MCP server", by_server, "tools-by-server")]}


def _budget_bars():
    """Each active budget's spend in its current period, in percent of its limit (capped at 200 for the bar),
    drawn to scale against the limit: 100 % is the marked line, whatever the other budgets spend."""
    budgets = list(Budget.objects.filter(is_active=True).order_by("-created_at")[:20])
    current = budgets_current(budgets)
    targets = _budget_targets(budgets)
    points = []
    for budget in budgets:
        row = current[budget.pk]
        if budget.limit_usd is not None:
            spent, limit = row.spent_usd, budget.limit_usd
        else:
            spent, limit = row.spent_tokens, budget.limit_tokens
        percent = Decimal(spent) * 100 / limit if limit else Decimal(100 if spent else 0)
        target = targets.get(budget.pk) or budget.target_id  # a target deleted since: its id
        on = "everyone" if budget.scope == Budget.Scope.GLOBAL else f"{budget.scope} {target}"
        label = f"{budget.name} ({on}, {budget.period})" if budget.name else f"{on} ({budget.period})"
        points.append((label, min(percent, Decimal(200))))
    return row_chart(points, format_value=lambda value: f"{Decimal(value):.1f}%", limit=100)


def _budget_targets(budgets: list[Budget]) -> dict:
    """What each budget is on, by name (a username, a key's name, a group's name, a template's key), one query
    per scope: budgets keep only the target's id."""
    ids: dict[str, set[str]] = {}
    for budget in budgets:
        ids.setdefault(budget.scope, set()).add(budget.target_id)
    user_model = get_user_model()
    names = {
        Budget.Scope.USER: {str(pk): name for pk, name in user_model.objects.filter(
            pk__in=_ints(ids.get(Budget.Scope.USER, ()))).values_list("pk", user_model.USERNAME_FIELD)},
        Budget.Scope.GROUP: {str(pk): name for pk, name in Group.objects.filter(
            pk__in=_ints(ids.get(Budget.Scope.GROUP, ()))).values_list("pk", "name")},
        Budget.Scope.KEY: {str(uid): name or f"{prefix}…" for uid, name, prefix in ApiToken.objects.filter(
            uid__in=_uuids(ids.get(Budget.Scope.KEY, ()))).values_list("uid", "name", "prefix")},
        Budget.Scope.TEMPLATE: {str(pk): key for pk, key in WorkflowTemplate.objects.filter(
            pk__in=_uuids(ids.get(Budget.Scope.TEMPLATE, ()))).values_list("pk", "key")},
    }
    return {budget.pk: names.get(budget.scope, {}).get(budget.target_id) for budget in budgets}


def _ints(texts) -> list[int]:
    return [int(text) for text in texts if text.isdigit()]


def _uuids(texts) -> list[uuid.UUID]:
    found = []
    for text in texts:
        try:
            found.append(uuid.UUID(text))
        except ValueError:
            continue  # not an id of that table: no name
    return found


def _by_day(days: list[dict], figure: str, format_value):
    return column_chart([(str(day["day"]), day[figure]) for day in days], format_value=format_value)


class PromptWithVersionsAdmin(PromptAdmin):
    """The prompt pages with its versions and split variants side by side (analytics.prompt_versions)."""

    readonly_fields = ("version_comparison",)
    fields = ("name", "owner", "description", "version_comparison")

    @admin.display(description="versions compared")
    def version_comparison(self, prompt: Prompt) -> str:
        report = prompt_version_report(prompt=prompt)
        score_names = sorted({name for row in report["versions"] for name, summary in row["scores"].items()
                              if "mean" in summary})
        rows = [{**row, "p50": row["latency_ms"]["p50"], "p95": row["latency_ms"]["p95"],
                 "error_rate": f"{row['means']['error_rate']['mean']:.1%}",
                 "scores": [_mean_cell(row, name) for name in score_names]} for row in report["versions"]]
        return render_to_string("admin/prompts/version_comparison.html",
                                {"report": report, "rows": rows, "score_names": score_names})


def _mean_cell(row: dict, name: str) -> str:
    summary = row["scores"].get(name)
    if not summary or summary.get("mean") is None:
        return "–"
    difference = ((row["vs_baseline"] or {}).get("scores") or {}).get(name) or {}
    interval = difference.get("ci95")
    shown = f"{summary['mean']:.3g} (n={summary['n']})"
    if interval:
        shown += f"; Δ {difference['difference']:+.3g} [{interval[0]:+.3g}, {interval[1]:+.3g}]"
    return shown


admin.site.unregister(Prompt)
admin.site.register(Prompt, PromptWithVersionsAdmin)
