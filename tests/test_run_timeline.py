"""Issue 47 in a real browser: from the operations dashboard, a run's live page and back to its admin page, whose
timeline (its nodes, LLM calls and tool calls on one time axis, with tokens and cost) Chromium draws in order."""
from datetime import timedelta

import pytest

from tests.browser import needs_chromium
from tests.test_admin_dashboard import admin_url, log_in, run  # noqa: F401 (the fixture)
from workflows.models import LLMCall, NodeExecution, ToolCall
from workflows.timeline import MIN_WIDTH

pytest_plugins = ["tests.fixtures_browser"]


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_item_timeline_renders_in_chromium_and_the_dashboard_links_round_trip(admin_url, staff, new_page,  # noqa: F811
                                                                               settings):
    # Tokens 5 ms apart: the model nodes take a real share of the run's span, on a loaded machine too (where its
    # writes can take longer than a model that answers at once).
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 5
    tools_run = run(owner=staff, message="What is 12*7?", chat=True)
    expected = {"node": NodeExecution.objects.filter(execution=tools_run).count(),
                "llm": LLMCall.objects.filter(execution=tools_run).count(),
                "tool": ToolCall.objects.filter(execution=tools_run).count()}
    assert expected["node"] >= 2 and expected["llm"] >= 1 and expected["tool"] == 1
    errors: list[str] = []
    page = new_page(viewport={"width": 1366, "height": 900})
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    outside: list[str] = []
    page.on("request", lambda request: request.url.startswith(admin_url) or outside.append(request.url))
    log_in(page, admin_url, staff)
    page.get_by_test_id("operations-link").click()
    slowest = page.get_by_test_id("slowest-runs")
    slowest.get_by_test_id("run-live-link").first.click()
    page.wait_for_function(f"() => document.querySelector('[data-testid=run-id]').textContent"
                           f" === '{tools_run.pk}'")
    page.get_by_test_id("run-admin").click()
    page.wait_for_url(f"{admin_url}/admin/workflows/workflowexecution/{tools_run.pk}/change/")
    span_ms = int(page.get_by_test_id("run-timeline").get_attribute("data-span-ms"))
    span_us = int(page.get_by_test_id("run-timeline").get_attribute("data-span-us"))
    rows = page.eval_on_selector_all("[data-testid=timeline-row]", """rows => rows.map(row => {
        const lane = row.querySelector('.lane').getBoundingClientRect();
        const bar = row.querySelector('[data-testid=timeline-bar]').getBoundingClientRect();
        return {kind: row.dataset.kind, left: bar.left, right: bar.right, width: bar.width,
                laneLeft: lane.left, laneRight: lane.right, ms: Number(row.querySelector(
                    '[data-testid=timeline-ms]').textContent), tokens: row.cells[3].textContent.trim(),
                cost: row.cells[4].textContent.trim()};
    })""")

    kinds = {kind: sum(row["kind"] == kind for row in rows) for kind in expected}
    assert kinds == expected
    for row in rows:  # every bar is drawn inside its lane, with a width
        assert row["laneLeft"] - 0.5 <= row["left"] < row["right"] <= row["laneRight"] + 0.5, row
    lefts = [row["left"] for row in rows]
    assert lefts == sorted(lefts)  # earliest first, on one axis
    # Each node is drawn where and as long as it ran: its offset from the first node and its duration, in
    # fractions of the run's span, are those of its row (to a pixel of the lane).
    nodes = list(NodeExecution.objects.filter(execution=tools_run).order_by("started_at", "index"))
    drawn = [row for row in rows if row["kind"] == "node"]
    lane = drawn[0]["laneRight"] - drawn[0]["laneLeft"]
    assert span_ms >= tools_run.execution_time_ms
    # To the microsecond, as the page places them: a quick run spans a few milliseconds, where whole ones are coarse.
    us = timedelta(microseconds=1)
    first = nodes[0].started_at
    base = (drawn[0]["left"] - drawn[0]["laneLeft"]) / lane  # where the first node starts on the axis
    for node, row in zip(nodes, drawn, strict=True):
        offset_us, ran_us = (node.started_at - first) / us, (node.completed_at - node.started_at) / us
        # a bar is at least MIN_WIDTH wide, and one that would then pass the axis's end ends there
        at = min(base + offset_us / span_us, 1 - max(ran_us / span_us, MIN_WIDTH / 100))
        assert row["left"] - row["laneLeft"] == pytest.approx(at * lane, abs=1.5), node.node_id
        assert row["ms"] == node.duration_ms
        if ran_us / span_us > 0.01:
            assert row["width"] == pytest.approx(ran_us / span_us * lane, abs=1.5), node.node_id
    assert max(row["width"] for row in drawn) > 5  # the model node's bar is a bar, not a tick
    # each LLM call's row shows its tokens and its cost (a dollar figure)
    calls = LLMCall.objects.filter(execution=tools_run)
    assert sorted(row["tokens"] for row in rows if row["kind"] == "llm") == sorted(
        str(call.total_tokens) for call in calls)
    assert all(row["cost"].startswith("$") for row in rows if row["kind"] == "llm")
    assert outside == [] and errors == []
