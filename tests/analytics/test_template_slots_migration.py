"""A template's figures, kept in one row before, become its slots when analytics 0005 migrates: each the sums over
the ended runs whose id picks it, so that a later re-pricing of a run finds the run's figures in its own slot; 0007
and 0008 spread the slots again (16 to 64, 64 to 256) the same way."""
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from analytics.models import TemplateAnalytics
from tests.invariants import assert_i2
from workflows.models import WorkflowTemplate

BEFORE = [("analytics", "0004_usage_rollup_api_key")]
AFTER = [("analytics", "0005_template_analytics_slots")]


def _before(graph, node, migration):
    """`node`, or the latest migration of its app before it that does not need `migration`."""
    while migration in graph.forwards_plan(node):
        node = next(parent.key for parent in graph.node_map[node].parents if parent.key[0] == node[0])
    return node


@pytest.mark.django_db(transaction=True)
def test_a_templates_one_row_becomes_the_slots_of_its_runs(alice):
    template = WorkflowTemplate.objects.get(key="universal_chat")
    ended = timezone.now()
    runs = [(uuid.uuid4(), status, Decimal(f"0.0000{n}5")) for n, status in
            enumerate(["completed", "completed", "failed", "cancelled", "completed", "running"])]
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        # every other app as it is now, analytics before its slots (an app's later migration that needs them: not)
        others = [_before(executor.loader.graph, node, AFTER[0])
                  for node in executor.loader.graph.leaf_nodes() if node[0] != "analytics"]
        old_apps = executor.loader.project_state([*others, *BEFORE]).apps
        Execution = old_apps.get_model("workflows", "WorkflowExecution")
        for n, (pk, status, cost) in enumerate(runs):
            Execution.objects.create(id=pk, owner_id=alice.pk, template_id=template.pk, status=status, cost=cost,
                                     prompt_tokens=n, completion_tokens=2 * n, total_tokens=3 * n,
                                     execution_time_ms=10 * n, completed_at=ended + timedelta(seconds=n))
        old_apps.get_model("analytics", "TemplateAnalytics").objects.create(
            template_id=template.pk, total_executions=5, successful_executions=3, failed_executions=1,
            cancelled_executions=1, total_cost=Decimal("0.00025"), prompt_tokens=10, completion_tokens=20,
            total_tokens=30, total_execution_time_ms=100)
        executor.loader.build_graph()
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    slots = {row.slot: row for row in TemplateAnalytics.objects.filter(template=template)}
    expected: dict = {}
    for n, (pk, status, cost) in enumerate(runs[:5]):
        slot = expected.setdefault(pk.int % TemplateAnalytics.SLOTS, {"runs": 0, "cost": Decimal("0"), "tokens": 0})
        slot["runs"] += 1
        slot["cost"] += cost
        slot["tokens"] += 3 * n
    assert {n: {"runs": s.total_executions, "cost": s.total_cost, "tokens": s.total_tokens}
            for n, s in slots.items()} == expected
    assert max(s.last_used_at for s in slots.values()) == ended + timedelta(seconds=4)
    assert max(s.last_failure_at for s in slots.values() if s.last_failure_at) == ended + timedelta(seconds=2)
    assert_i2()


SPREADS = {  # (the migration before, the one that spreads, the slots before; the runs' low bits and outcomes)
    "16 to 64": ("0006_alter_usagerollup_api_key", "0007_template_analytics_64_slots", 16,
                 [(3, "completed"), (19, "completed"), (35, "failed"), (3 + 64, "cancelled"), (3, "running")]),
    "64 to 256": ("0007_template_analytics_64_slots", "0008_template_analytics_256_slots", 64,
                  [(3, "completed"), (67, "completed"), (131, "failed"), (3 + 256, "cancelled"), (3, "running")]),
}


@pytest.mark.parametrize("spread", SPREADS, ids=list(SPREADS))
@pytest.mark.django_db(transaction=True)
def test_a_templates_slots_spread_again_each_the_sums_of_the_runs_whose_id_picks_it(alice, spread):
    before_name, after_name, old_slots, lows = SPREADS[spread]
    before, after = [("analytics", before_name)], [("analytics", after_name)]
    new_slots = 4 * old_slots
    template = WorkflowTemplate.objects.get(key="universal_chat")
    ended = timezone.now()
    runs = [(uuid.UUID(int=(n << 12) + low), status, Decimal(f"0.0000{n}5")) for n, (low, status) in enumerate(lows)]
    assert {pk.int % old_slots for pk, _, _ in runs} == {3}  # before: the four ended runs all in slot 3
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        others = [_before(executor.loader.graph, node, after[0])
                  for node in executor.loader.graph.leaf_nodes() if node[0] != "analytics"]
        old_apps = executor.loader.project_state([*others, *before]).apps
        Execution = old_apps.get_model("workflows", "WorkflowExecution")
        for n, (pk, status, cost) in enumerate(runs):
            Execution.objects.create(id=pk, owner_id=alice.pk, template_id=template.pk, status=status, cost=cost,
                                     prompt_tokens=n, completion_tokens=2 * n, total_tokens=3 * n,
                                     execution_time_ms=10 * n, completed_at=ended + timedelta(seconds=n))
        Analytics = old_apps.get_model("analytics", "TemplateAnalytics")
        Analytics.objects.filter(template_id=template.pk).delete()
        Analytics.objects.create(
            template_id=template.pk, slot=3, total_executions=4, successful_executions=2, failed_executions=1,
            cancelled_executions=1, total_cost=sum(cost for _, _, cost in runs[:4]), prompt_tokens=6,
            completion_tokens=12, total_tokens=18, total_execution_time_ms=60)
        executor.loader.build_graph()
        executor.migrate(after)
        slots = {row.slot: (row.total_executions, row.total_tokens) for row in
                 TemplateAnalytics.objects.filter(template=template)}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    # the first and the fourth run still share slot 3; the second and third have slots of their own
    assert slots == {3: (2, 0 + 9), lows[1][0] % new_slots: (1, 3), lows[2][0] % new_slots: (1, 6)}
    assert_i2()
