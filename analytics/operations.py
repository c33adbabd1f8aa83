"""The operations dashboard's figures, read from the source rows (runs, LLM calls, tool calls) of a recent window:
runs per hour (the last 24 hours) or per day (longer windows), latency percentiles and error rates per template,
model, provider and tool, and the slowest and the failed runs.

Everything is computed in SQL that SQLite and PostgreSQL both run. A percentile is the nearest-rank one (the
value at rank ceil(p × n) of the group's values in ascending order), picked by ROW_NUMBER() and COUNT() windows
partitioned by the group: one query per dimension and percentile, returning one row per group."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.db.models import Case, Count, F, Q, QuerySet, Sum, Value, When, Window
from django.db.models.functions import Coalesce, Concat, NullIf, RowNumber, TruncDay, TruncHour
from django.utils import timezone

from tools.selectors import tool_names_known
from workflows.models import LLMCall, ToolCall, WorkflowExecution

UTC = dt_timezone.utc
_STATUS = WorkflowExecution.Status
PERCENTILES = (50, 95)
MAX_GROUPS = 20  # rows per table: the groups with the most rows
MAX_RUNS = 20  # slowest and failed runs listed


@dataclass(frozen=True)
class Span:
    name: str
    span: timedelta
    unit: str  # "hour" or "day": the width of a bucket


WINDOWS = {
    "24h": Span("24h", timedelta(hours=24), "hour"),
    "7d": Span("7d", timedelta(days=7), "day"),
    "30d": Span("30d", timedelta(days=30), "day"),
    "90d": Span("90d", timedelta(days=90), "day"),
}


def window_buckets(window: Span, now: datetime) -> list[datetime]:
    """The starts of the window's buckets, oldest first, the current (partial) hour or UTC day last."""
    now = now.astimezone(UTC)
    if window.unit == "hour":
        last, step = now.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
    else:
        last, step = now.replace(hour=0, minute=0, second=0, microsecond=0), timedelta(days=1)
    count = int(window.span / step)
    return [last - step * index for index in reversed(range(count))]


def runs_in(since: datetime) -> QuerySet[WorkflowExecution]:
    return WorkflowExecution.objects.filter(created_at__gte=since)


def template_label():
    """A run's template key; a run of no template is named by its kind (graph, definition…)."""
    return Coalesce(F("template__key"), F("workflow_type"))


def runs_by_bucket(since: datetime, buckets: list[datetime], unit: str) -> list[dict]:
    """Per bucket (by the run's creation): runs, of which failed and cancelled, tokens and cost."""
    trunc = (TruncHour if unit == "hour" else TruncDay)("created_at", tzinfo=UTC)
    found = {row["bucket"]: row for row in runs_in(since).order_by().values(bucket=trunc).annotate(
        runs=Count("pk"), failed=Count("pk", filter=Q(status=_STATUS.FAILED)),
        cancelled=Count("pk", filter=Q(status=_STATUS.CANCELLED)),
        tokens=Sum("total_tokens"), cost=Sum("cost"))}
    rows = []
    for start in buckets:
        row = found.get(start, {})
        rows.append({"start": start, "runs": row.get("runs", 0), "failed": row.get("failed", 0),
                     "cancelled": row.get("cancelled", 0), "tokens": row.get("tokens") or 0,
                     "cost": row.get("cost") or Decimal(0)})
    return rows


def latency_percentiles(rows: QuerySet, *, group, value: str) -> list[dict]:
    """Per group (`group`: an expression naming it): n, p50 and p95 of `value` (nearest rank), the groups with
    the most rows first, at most MAX_GROUPS."""
    rows = rows.filter(**{f"{value}__isnull": False}).annotate(group=group).order_by()
    counts = list(rows.values("group").annotate(n=Count("pk")).order_by("-n", "group")[:MAX_GROUPS])
    found = {row["group"]: {"group": row["group"], "n": row["n"]} for row in counts}
    for percent in PERCENTILES:
        ranked = rows.annotate(
            rank=Window(RowNumber(), partition_by=[F("group")], order_by=[F(value).asc(), F("pk").asc()]),
            size=Window(Count("pk"), partition_by=[F("group")]),
        ).annotate(
            # rank = ceil(percent × size / 100) in integers: rank × 100 ≥ percent × size > (rank - 1) × 100
            over=F("rank") * 100 - F("size") * percent,
        ).filter(over__gte=0, over__lt=100)
        for group, figure in ranked.values_list("group", value):
            if group in found:
                found[group][f"p{percent}"] = figure
    return [found[row["group"]] for row in counts]


def error_rates(rows: QuerySet, *, group, failed: Q) -> list[dict]:
    """Per group: n, failed and their share, the groups with the most failures first, at most MAX_GROUPS."""
    found = rows.annotate(group=group).order_by().values("group").annotate(
        n=Count("pk"), failed=Count("pk", filter=failed)).order_by("-failed", "-n", "group")[:MAX_GROUPS]
    return [{**row, "rate": row["failed"] / row["n"]} for row in found if row["n"]]


def operations_report(*, window: Span, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    buckets = window_buckets(window, now)
    since = buckets[0]
    runs = runs_in(since)
    ended = runs.filter(status__in=WorkflowExecution.TERMINAL)
    calls = LLMCall.objects.filter(created_at__gte=since)
    tools = ToolCall.objects.filter(created_at__gte=since)
    run_list = ended.select_related("template", "owner").order_by()
    return {
        "since": since, "until": now, "unit": window.unit,
        "buckets": runs_by_bucket(since, buckets, window.unit),
        "latency": {
            "template": latency_percentiles(ended, group=template_label(), value="execution_time_ms"),
            "model": latency_percentiles(calls, group=_provider_model(), value="duration_ms"),
            "tool": latency_percentiles(tools, group=F("tool"), value="duration_ms"),
        },
        "errors": {
            "template": error_rates(ended, group=template_label(), failed=Q(status=_STATUS.FAILED)),
            "provider": error_rates(ended, group=Coalesce(NullIf(F("provider"), Value("")), Value("(none)")),
                                    failed=Q(status=_STATUS.FAILED)),
            "tool": error_rates(tools, group=F("tool"), failed=Q(ok=False)),
        },
        "slowest": list(run_list.filter(execution_time_ms__isnull=False).order_by(
            "-execution_time_ms", "-created_at")[:MAX_RUNS]),
        "failed": list(run_list.filter(status=_STATUS.FAILED).order_by("-created_at")[:MAX_RUNS]),
    }


def _provider_model():
    return Concat(F("provider"), Value("/"), F("model"))


# --- /metrics: the same groups as latency histograms ---------------------------------------------------------
RUN_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LLM_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOOL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OTHER_TOOL = "(other)"  # the tool label of a call of a name no tool has (a model's invention): one series for all


@dataclass(frozen=True)
class Histogram:
    name: str
    documentation: str
    labels: tuple[str, ...]
    bounds: tuple  # upper bounds in seconds, +Inf left out
    series: list[tuple[tuple[str, ...], list[int], int, float]]  # labels, cumulative counts per bound, count, sum_s


def _histogram(rows: QuerySet, *, name: str, documentation: str, labels: dict, value: str, bounds: tuple) -> Histogram:
    """One grouped query: per label set, how many rows have `value` (ms) at most each bound, their count and sum.
    `labels`: the metric's label names, each with the expression giving it."""
    aliases = [f"label_{label}" for label in labels]
    found = rows.filter(**{f"{value}__isnull": False}).annotate(
        **{f"label_{label}": expression for label, expression in labels.items()}).order_by().values(*aliases).annotate(
        n=Count("pk"), total=Sum(value),
        **{f"le_{index}": Count("pk", filter=Q(**{f"{value}__lte": bound * 1000})) for index, bound in
           enumerate(bounds)})
    series = [(tuple(str(row[alias]) for alias in aliases), [row[f"le_{index}"] for index in range(len(bounds))],
               row["n"], (row["total"] or 0) / 1000) for row in found.order_by(*aliases)]
    return Histogram(name, documentation, tuple(labels), bounds, series)


def latency_histograms() -> list[Histogram]:
    """Run, LLM call and tool call durations, with the dashboard's groups as labels: every row there is (read at
    scrape time, so every process reports the same)."""
    ok = {"status": Case(When(ok=True, then=Value("ok")), default=Value("error"))}
    tool = Case(When(tool__in=sorted(tool_names_known()), then=F("tool")), default=Value(OTHER_TOOL))
    return [
        _histogram(WorkflowExecution.objects.filter(status__in=WorkflowExecution.TERMINAL),
                   name="chatter_run_duration_seconds", documentation="Duration of ended runs.",
                   labels={"template": template_label(), "status": F("status")}, value="execution_time_ms",
                   bounds=RUN_BUCKETS_S),
        _histogram(LLMCall.objects.all(), name="chatter_llm_call_duration_seconds",
                   documentation="Duration of LLM calls.", labels={"provider": F("provider"), "model": F("model")},
                   value="duration_ms", bounds=LLM_BUCKETS_S),
        _histogram(ToolCall.objects.all(), name="chatter_tool_call_duration_seconds",
                   documentation="Duration of tool calls.", labels={"tool": tool, **ok},
                   value="duration_ms", bounds=TOOL_BUCKETS_S),
    ]
