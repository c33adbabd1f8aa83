"""Issue 47, a run's timeline (workflows.timeline): where its bars sit on the axis, for a run still going too; its
admin page shows it (the browser test is tests/test_run_timeline.py)."""
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.factories import WorkflowExecutionFactory
from workflows.models import LLMCall, NodeExecution, ToolCall, WorkflowExecution
from workflows.timeline import run_timeline

pytestmark = pytest.mark.django_db


def test_item_timeline_places_bars_of_a_run_still_going(alice, client, staff):
    run = WorkflowExecutionFactory(owner=alice)
    t0 = timezone.now() - timedelta(seconds=10)
    WorkflowExecution.objects.filter(pk=run.pk).update(status="running", started_at=t0 - timedelta(seconds=1))
    run.refresh_from_db()
    NodeExecution.objects.create(execution=run, index=1, node_id="model", node_type="model", started_at=t0)
    LLMCall.objects.create(execution=run, provider="local", model="m", requested_model="m", prompt_tokens=3,
                           completion_tokens=4, total_tokens=7, cost=Decimal("0.002"), duration_ms=500,
                           created_at=t0 + timedelta(seconds=1))
    tool = ToolCall.objects.create(execution=run, node_id="tools", tool="calculator", ok=False, duration_ms=1000)
    ToolCall.objects.filter(pk=tool.pk).update(created_at=t0 + timedelta(seconds=3))

    timeline = run_timeline(run, now=t0 + timedelta(seconds=3))

    assert timeline.span_ms == 4000  # from the run's start to now: the node is still going
    bars = {bar.kind: bar for bar in timeline.bars}
    assert [bar.kind for bar in timeline.bars] == ["node", "llm", "tool"]  # by start
    assert (bars["node"].left, bars["node"].width, bars["node"].duration_ms) == (25.0, 75.0, None)
    assert (bars["llm"].left, bars["llm"].width, bars["llm"].tokens, bars["llm"].cost) == (
        37.5, 12.5, 7, Decimal("0.002"))
    assert (bars["tool"].left, bars["tool"].width, bars["tool"].failed) == (75.0, 25.0, True)

    client.force_login(staff)
    page = client.get(f"/admin/workflows/workflowexecution/{run.pk}/change/").content.decode()
    assert page.count('data-testid="timeline-row"') == 3 and "calculator" in page  # (at the real now)


def test_item_timeline_of_a_long_run_says_how_many_bars_it_left_out(alice, client, staff):
    """A run of more bars than the timeline draws (MAX_BARS) shows its first ones and counts every bar it left out,
    of whichever kind."""
    from workflows.timeline import MAX_BARS

    run = WorkflowExecutionFactory(owner=alice)
    t0 = timezone.now() - timedelta(minutes=10)
    WorkflowExecution.objects.filter(pk=run.pk).update(status="completed", started_at=t0,
                                                       completed_at=t0 + timedelta(minutes=5))
    run.refresh_from_db()
    NodeExecution.objects.create(execution=run, index=1, node_id="model", node_type="model", started_at=t0,
                                 completed_at=t0 + timedelta(minutes=5), duration_ms=300_000)
    calls = MAX_BARS + 20
    LLMCall.objects.bulk_create(LLMCall(execution=run, provider="local", model="m", requested_model="m",
                                        duration_ms=100, created_at=t0 + timedelta(seconds=1 + index))
                                for index in range(calls))

    timeline = run_timeline(run)

    assert len(timeline.bars) == MAX_BARS and timeline.left_out == 1 + calls - MAX_BARS
    client.force_login(staff)
    page = client.get(f"/admin/workflows/workflowexecution/{run.pk}/change/").content.decode()
    assert page.count('data-testid="timeline-row"') == MAX_BARS and f"{1 + calls - MAX_BARS} more not shown" in page
