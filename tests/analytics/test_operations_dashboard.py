"""Issue 47, the operations dashboard (/admin/analytics/usagerollup/operations/): runs per hour over the last 24
hours and per day beyond, latency p50/p95 per template, model and tool, error rates per template, provider and
tool, the slowest and the failed runs with links to their admin and live pages. The figures are compared to what
the raw rows say, computed here in Python from the rows the test made."""
import math
import random
import re
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from analytics.operations import WINDOWS, operations_report
from tests.factories import WorkflowTemplateFactory
from workflows.models import LLMCall, ToolCall, WorkflowExecution

pytestmark = pytest.mark.django_db

PAGE = "/admin/analytics/usagerollup/operations/"
STATUSES = ["completed", "completed", "completed", "failed", "cancelled"]


def nearest_rank(values: list[int], percent: int) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(percent * len(ordered) / 100) - 1]


@pytest.fixture
def rows(alice):
    """Runs of two templates and of none over the last 3 days, with LLM calls and tool calls, from a fixed seed;
    one run in progress, one two hours old, and one older than every window."""
    chance = random.Random(47)
    templates = [WorkflowTemplateFactory(owner=alice, key="triage"), WorkflowTemplateFactory(owner=alice, key="digest")]
    now = timezone.now()
    runs = []
    for index in range(60):
        template = [*templates, None][index % 3]
        status = STATUSES[chance.randrange(len(STATUSES))] if index else "running"
        created = now - timedelta(minutes=chance.randrange(0, 72 * 60)) if index != 1 else now - timedelta(hours=2)
        runs.append(WorkflowExecution(
            owner=alice, workflow_type="template" if template else "graph", template=template, status=status,
            provider=["openai", "anthropic", ""][index % 4 % 3], model="m", created_at=created,
            execution_time_ms=chance.randrange(10, 5000) if status != "running" else None,
            total_tokens=index * 10, prompt_tokens=index * 10, cost=Decimal(index) / 1000))
    runs.append(WorkflowExecution(owner=alice, workflow_type="graph", status="failed", created_at=now - timedelta(
        days=200), execution_time_ms=999_999))
    moments = [run.created_at for run in runs]
    WorkflowExecution.objects.bulk_create(runs)
    for run, moment in zip(runs, moments, strict=True):  # created_at is auto_now_add: each run's own moment after
        WorkflowExecution.objects.filter(pk=run.pk).update(created_at=moment)
        run.created_at = moment
    calls = [LLMCall(execution=runs[index], provider=["openai", "anthropic"][index % 2], model=["a", "b"][index % 3 % 2],
                     requested_model="a", created_at=runs[index].created_at, duration_ms=chance.randrange(5, 900))
             for index in range(0, 60, 2)]
    LLMCall.objects.bulk_create(calls)
    tools = []
    for index in range(0, 60, 3):
        tools.append(ToolCall.objects.create(execution=runs[index], node_id="tools",
                                             tool=["calculator", "current_time"][index % 2],
                                             ok=chance.random() > 0.3, duration_ms=chance.randrange(1, 300)))
        ToolCall.objects.filter(pk=tools[-1].pk).update(created_at=runs[index].created_at)
    return {"now": now}


def in_window(moment, since) -> bool:
    return moment >= since


def test_item_dashboard_hourly_buckets_equal_the_raw_rows(rows):
    report = operations_report(window=WINDOWS["24h"], now=rows["now"])
    buckets = report["buckets"]
    assert len(buckets) == 24 and buckets[-1]["start"] <= rows["now"] < buckets[-1]["start"] + timedelta(hours=1)
    assert report["since"] == buckets[0]["start"]
    expected = defaultdict(lambda: {"runs": 0, "failed": 0, "cancelled": 0, "tokens": 0, "cost": Decimal(0)})
    for run in WorkflowExecution.objects.filter(created_at__gte=report["since"]):
        row = expected[run.created_at.replace(minute=0, second=0, microsecond=0)]
        row["runs"] += 1
        row["failed"] += run.status == "failed"
        row["cancelled"] += run.status == "cancelled"
        row["tokens"] += run.total_tokens
        row["cost"] += run.cost
    shown = {bucket["start"]: {name: bucket[name] for name in ("runs", "failed", "cancelled", "tokens", "cost")}
             for bucket in buckets if bucket["runs"]}
    assert shown == dict(expected)
    assert len(shown) >= 8 and sum(bucket["runs"] for bucket in buckets) >= 15  # spread over the hours


def test_item_dashboard_daily_buckets_beyond_a_day(rows):
    report = operations_report(window=WINDOWS["7d"], now=rows["now"])
    assert len(report["buckets"]) == 7 and report["unit"] == "day"
    counted = WorkflowExecution.objects.filter(created_at__gte=report["since"]).count()
    assert sum(bucket["runs"] for bucket in report["buckets"]) == counted
    assert counted == 60  # not the 200-day-old run
    for bucket in report["buckets"]:
        assert bucket["runs"] == WorkflowExecution.objects.filter(
            created_at__gte=bucket["start"], created_at__lt=bucket["start"] + timedelta(days=1)).count()


def test_item_dashboard_latency_percentiles_equal_the_raw_rows(rows):
    report = operations_report(window=WINDOWS["7d"], now=rows["now"])
    since = report["since"]
    by_template, by_model, by_tool = defaultdict(list), defaultdict(list), defaultdict(list)
    for run in WorkflowExecution.objects.filter(created_at__gte=since, status__in=WorkflowExecution.TERMINAL):
        by_template[run.template.key if run.template else run.workflow_type].append(run.execution_time_ms)
    for call in LLMCall.objects.filter(created_at__gte=since):
        by_model[f"{call.provider}/{call.model}"].append(call.duration_ms)
    for call in ToolCall.objects.filter(created_at__gte=since):
        by_tool[call.tool].append(call.duration_ms)
    for name, expected in (("template", by_template), ("model", by_model), ("tool", by_tool)):
        shown = {row["group"]: (row["n"], row["p50"], row["p95"]) for row in report["latency"][name]}
        assert shown == {group: (len(values), nearest_rank(values, 50), nearest_rank(values, 95))
                         for group, values in expected.items()}, name
        assert len(shown) >= 2, name


def test_item_dashboard_error_rates_equal_the_raw_rows(rows):
    report = operations_report(window=WINDOWS["24h"], now=rows["now"])
    since = report["since"]
    by_template, by_provider, by_tool = defaultdict(list), defaultdict(list), defaultdict(list)
    for run in WorkflowExecution.objects.filter(created_at__gte=since, status__in=WorkflowExecution.TERMINAL):
        by_template[run.template.key if run.template else run.workflow_type].append(run.status == "failed")
        by_provider[run.provider or "(none)"].append(run.status == "failed")
    for call in ToolCall.objects.filter(created_at__gte=since):
        by_tool[call.tool].append(not call.ok)
    for name, expected in (("template", by_template), ("provider", by_provider), ("tool", by_tool)):
        shown = {row["group"]: (row["n"], row["failed"], row["rate"]) for row in report["errors"][name]}
        assert shown == {group: (len(flags), sum(flags), sum(flags) / len(flags))
                         for group, flags in expected.items()}, name
    assert any(row["failed"] for row in report["errors"]["template"])


def test_item_dashboard_slowest_and_failed_runs_link_to_the_admin_and_the_live_page(rows, client, staff):
    client.force_login(staff)
    page = client.get(PAGE, {"window": "24h"})
    assert page.status_code == 200
    html = page.content.decode()
    report = operations_report(window=WINDOWS["24h"])
    window_runs = WorkflowExecution.objects.filter(created_at__gte=report["since"])
    slowest = list(window_runs.filter(status__in=WorkflowExecution.TERMINAL).order_by(
        "-execution_time_ms", "-created_at")[:20])
    failed = list(window_runs.filter(status="failed").order_by("-created_at")[:20])
    assert [run.pk for run in report["slowest"]] == [run.pk for run in slowest]
    assert [run.pk for run in report["failed"]] == [run.pk for run in failed] and failed
    for name, expected in (("slowest", slowest), ("failed", failed)):
        table = re.search(rf'data-testid="{name}-runs".*?</table>', html, re.S).group(0)
        assert re.findall(r'data-run="([^"]+)"', table) == [str(run.pk) for run in expected]
        for run in expected:
            admin_link = f'href="/admin/workflows/workflowexecution/{run.pk}/change/"'
            assert admin_link in table and f'href="/live/#{run.pk}"' in table
    first = report["failed"][0]
    assert client.get(f"/admin/workflows/workflowexecution/{first.pk}/change/").status_code == 200


def test_item_dashboard_page_shows_the_figures_and_refuses_an_unknown_window(rows, client, staff):
    client.force_login(staff)
    html = client.get(PAGE).content.decode()  # the last 24 hours unless asked
    assert html.count('data-testid="bucket-row"') == 24
    assert 'data-testid="chart-runs-by-bucket"' in html and 'data-testid="latency-template"' in html
    assert 'data-testid="errors-tool"' in html and 'data-testid="chart-budgets"' in html
    bad = client.get(PAGE, {"window": "1y"})
    assert bad.status_code == 200 and "errornote" in bad.content.decode()
    assert 'data-testid="bucket-row"' not in bad.content.decode()


def test_item_dashboard_is_for_staff_only(client, alice):
    client.force_login(alice)
    assert client.get(PAGE).status_code in (302, 403)


def test_item_metrics_latency_histograms_count_the_raw_rows_with_the_dashboard_labels(rows, client):
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}
    ended = WorkflowExecution.objects.filter(status__in=WorkflowExecution.TERMINAL).select_related("template")
    cases = [
        ("chatter_run_duration_seconds", [((("status", run.status), ("template", run.template.key if run.template
                                            else run.workflow_type)), run.execution_time_ms) for run in ended]),
        ("chatter_llm_call_duration_seconds", [((("model", call.model), ("provider", call.provider)), call.duration_ms)
                                               for call in LLMCall.objects.all()]),
        ("chatter_tool_call_duration_seconds", [((("status", "ok" if call.ok else "error"), ("tool", call.tool)),
                                                 call.duration_ms) for call in ToolCall.objects.all()]),
    ]
    for name, observed in cases:
        by_labels = defaultdict(list)
        for labels, ms in observed:
            by_labels[labels].append(ms)
        assert len(by_labels) >= 2, name
        for labels, values in by_labels.items():
            assert samples[(f"{name}_count", labels)] == len(values), (name, labels)
            assert samples[(f"{name}_sum", labels)] == pytest.approx(sum(values) / 1000)
            assert samples[(f"{name}_bucket", tuple(sorted((*labels, ("le", "+Inf")))))] == len(values)
            for bound in (0.1, 1.0):
                key = (f"{name}_bucket", tuple(sorted((*labels, ("le", str(bound))))))
                if key in samples:
                    assert samples[key] == sum(ms <= bound * 1000 for ms in values), (name, labels, bound)
        assert any(key[0] == f"{name}_bucket" and ("le", "0.1") in key[1] for key in samples), name


def test_item_grafana_dashboard_queries_only_metrics_that_metrics_serves(rows, client):
    import json
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs/operations/grafana-dashboard.json").read_text())
    served = {sample.name for family in text_string_to_metric_families(client.get("/metrics").content.decode())
              for sample in family.samples}
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bchatter_[a-z_]+", expr)}
    assert {"chatter_run_duration_seconds_bucket", "chatter_llm_call_duration_seconds_bucket",
            "chatter_tool_call_duration_seconds_bucket"} <= used
    assert used <= served
    labels = {"template", "status", "provider", "model", "tool", "kind", "le"}
    for expr in exprs:  # every label grouped or filtered on is one the metrics carry
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {name.strip() for name in group.split(",")} <= labels, expr


def test_item_metrics_tool_label_is_a_tool_that_exists_whatever_name_a_model_calls(api, alice, openai_stub, settings):
    """A model may call any name (invented, or steered there by a prompt): each is a tool call row, refused, but
    not a series of its own on /metrics, or any user could add series without end. The tool label is a built-in's
    name or a tool an MCP server listed (`<server>__<tool>`); any other name is `(other)`."""
    from prometheus_client.parser import text_string_to_metric_families

    from tools.models import McpServer

    McpServer.objects.create(owner=alice, name="tracker", url="http://127.0.0.1:9/mcp",
                             tools=[{"name": "add", "description": "", "input_schema": {}}])
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_stub.base_url, "sk-test-not-a-real-key"
    usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    invented = ["lookup_order_1", "lookup_order_2", "tracker__remove"]
    openai_stub.reply(usage=usage, tool_calls=[{"name": "calculator", "arguments": {"expression": "2*3"}},
                                               *({"name": name, "arguments": {}} for name in invented)])
    openai_stub.reply(content="6.", usage=usage)

    response = api.post("/api/v1/chat/", {"message": "2*3?", "provider": "openai", "model": "gpt-4o-mini"},
                        format="json")

    assert response.status_code == 201, response.content
    assert sorted(ToolCall.objects.values_list("tool", "ok")) == sorted(
        [("calculator", True), *((name, False) for name in invented)])
    text = api.get("/metrics").content.decode()
    counts = {(sample.labels["tool"], sample.labels["status"]): sample.value
              for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == "chatter_tool_call_duration_seconds_count"}
    assert counts == {("calculator", "ok"): 1, ("(other)", "error"): 3}
    ToolCall.objects.filter(tool="lookup_order_1").update(tool="tracker__add", ok=True)  # a tool the server lists
    text = api.get("/metrics").content.decode()
    assert 'tool="tracker__add"' in text and "lookup_order" not in text and "tracker__remove" not in text
