"""Experiments in the admin: their results (read-only), and experiments compared side by side, per item and in
total, with a CSV export. Experiments are made and run through the API or the command."""
from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from core.csv_cells import csv_cell
from core.money import usd
from experiments.models import Experiment, ExperimentResult
from experiments.progress import progress_counted, with_progress_counts
from experiments.selectors import experiments_compare
from workflows.services.templates import is_uuid


class ExperimentResultInline(admin.TabularInline):
    model = ExperimentResult
    fields = ("target", "item", "status", "output", "scores", "total_tokens", "cost", "judge_total_tokens",
              "judge_cost", "latency_ms", "execution")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "dataset", "status", "progress", "stop_reason", "concurrency", "budget",
                     "created_at", "completed_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "owner__username", "dataset__name")
    list_select_related = ("owner", "dataset")
    readonly_fields = ("id", "owner", "name", "description", "dataset", "targets", "evaluators", "concurrency",
                       "budget", "status", "progress", "stop_reason", "cancel_requested", "created_at", "queued_at",
                       "started_at", "completed_at")
    inlines = [ExperimentResultInline]
    actions = ["compare"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return with_progress_counts(super().get_queryset(request))

    @admin.display(description="progress")
    def progress(self, experiment: Experiment) -> str:
        """Pairs done (failed) of all target × item pairs, and what a pending or running one waits for."""
        progress = progress_counted(experiment)
        failed = f" ({progress['failed']} failed)" if progress["failed"] else ""
        waiting = f"; waiting for {progress['waiting_for']}" if progress["waiting_for"] else ""
        return f"{progress['done']} of {progress['total']} done{failed}{waiting}"

    def get_urls(self):
        return [path("compare/", self.admin_site.admin_view(self.compare_view), name="experiments_compare"),
                *super().get_urls()]

    @admin.action(description="Compare selected experiments side by side")
    def compare(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(f"{reverse('admin:experiments_compare')}?ids={ids}")

    def compare_view(self, request):
        """`?ids=a,b,…` side by side (in that order); `&format=csv` as a file."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        wanted = [part for part in request.GET.get("ids", "").split(",") if part]
        found = {str(e.pk): e for e in Experiment.objects.filter(pk__in=[w for w in wanted if is_uuid(w)])}
        experiments = [found[pk] for pk in wanted if pk in found]
        comparison = experiments_compare(experiments=experiments)
        if request.GET.get("format") == "csv":
            response = HttpResponse(comparison_csv(comparison), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="experiments.csv"'
            return response
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "title": "Experiments compared", "comparison": comparison,
                   "columns_with_totals": list(zip(comparison["columns"], comparison["totals"])), "ids": ",".join(found),
                   "missing": [pk for pk in wanted if pk not in found]}
        return TemplateResponse(request, "admin/experiments/compare.html", context)


CSV_FIGURES = ("status", "output", "total_tokens", "cost", "judge_total_tokens", "judge_cost", "latency_ms")
MONEY_FIGURES = ("cost", "judge_cost")


def comparison_csv(comparison: dict) -> str:
    """One row per item and column (experiment × target), then one total row per column."""
    names = comparison["score_names"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["experiment", "experiment_id", "target", "item", "input", "expected_output", *CSV_FIGURES,
                     *(f"score:{name}" for name in names)])
    for row in comparison["rows"]:
        for column, result in zip(comparison["columns"], row["cells"]):
            if result is None:
                continue
            writer.writerow([_cell(column["experiment"].name), column["experiment"].pk, _cell(column["target"]),
                             row["item"].pk, _cell(row["item"].input), _cell(row["item"].expected_output),
                             *(_figure(result, figure) for figure in CSV_FIGURES),
                             *(_cell(result.scores.get(name)) for name in names)])
    for column, total in zip(comparison["columns"], comparison["totals"]):
        writer.writerow([_cell(column["experiment"].name), column["experiment"].pk, _cell(column["target"]), "total",
                         "", "",
                         f"{total['items']} items, {total['failed']} failed", "", total["total_tokens"],
                         usd(total["cost"]), total["judge_total_tokens"], usd(total["judge_cost"]),
                         "" if total["latency_ms_mean"] is None else round(total["latency_ms_mean"], 1),
                         *(_cell((total["scores"].get(name) or {}).get("mean")) for name in names)])
    return out.getvalue()


def _figure(result, figure: str):
    value = getattr(result, figure)
    return usd(value) if figure in MONEY_FIGURES else _cell(value)


def _cell(value):
    """A number as it is; anything else as text (JSON when it is not text), formulas quoted (core.csv_cells)."""
    if value is None:
        return ""
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return value
    return csv_cell(value if isinstance(value, str) else json.dumps(value))
