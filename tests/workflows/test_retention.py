"""Retention (CHATTER_EVENT_RETENTION_DAYS): the event logs of runs finished long ago are deleted
in batches, whole; running runs, recent runs, totals, traces and every aggregate are left as they are."""
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from analytics.services import aggregates_drift
from conversations.models import Conversation
from core.errors import InvalidInput
from tests.invariants import assert_all, assert_seq_gapless
from workflows.models import Checkpoint, ExecutionEvent, LLMCall, NodeExecution, WorkflowExecution
from workflows.realtime import execution_feed
from workflows.services.recovery import events_prune
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run
from workflows.tasks import events_prune_task

pytestmark = pytest.mark.django_db


def days_ago(days: int):
    return timezone.now() - timedelta(days=days)


def finished(owner, *, days: int, message="What is 12*7?") -> WorkflowExecution:
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=owner, message=message,
                                                                        config={"checkpoints": "every_step"})).pk)
    WorkflowExecution.objects.filter(pk=execution.pk).update(completed_at=days_ago(days))
    return execution


def running_since(owner, *, days: int) -> WorkflowExecution:
    """A long-running run (started long ago, still running) with a few events logged back then."""
    execution = execution_create(ChatRequest(owner=owner, message="still going"))
    WorkflowExecution.objects.filter(pk=execution.pk).update(status="running", started_at=days_ago(days))
    for seq, event in enumerate(("workflow_started", "node_started", "node_completed"), start=1):
        ExecutionEvent.objects.create(execution=execution, seq=seq, event=event, data={}, created_at=days_ago(days))
    return execution


def totals():
    """Everything retention must never touch."""
    return (
        list(WorkflowExecution.objects.order_by("pk").values_list(
            "pk", "status", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "llm_calls")),
        list(Conversation.objects.order_by("pk").values_list("pk", "message_count", "total_tokens", "total_cost")),
        NodeExecution.objects.count(), LLMCall.objects.count(),
    )


def test_it_deletes_the_logs_of_runs_finished_before_the_cutoff_in_batches(alice, bob):
    old = [finished(alice, days=40), finished(bob, days=31)]
    recent = finished(alice, days=29)
    running = running_since(alice, days=60)
    old_events = ExecutionEvent.objects.filter(execution__in=old).count()
    kept = {e.pk: list(e.events.values_list("seq", "event")) for e in (recent, running)}
    before = totals()
    drift = aggregates_drift()  # back-dating completed_at moves runs out of their day's usage rollup

    old_checkpoints = Checkpoint.objects.filter(execution__in=old).count()
    recent_checkpoints = list(recent.checkpoints.values_list("pk", flat=True))
    assert old_checkpoints > 8 and recent_checkpoints

    assert events_prune(older_than_days=30, batch_size=4) == old_events > 8  # several batches

    assert ExecutionEvent.objects.filter(execution__in=old).count() == 0
    assert Checkpoint.objects.filter(execution__in=old).count() == 0  # the graph's checkpoints go with the log
    assert list(recent.checkpoints.values_list("pk", flat=True)) == recent_checkpoints
    assert {e.pk: list(e.events.values_list("seq", "event")) for e in (recent, running)} == kept
    assert totals() == before
    assert aggregates_drift() == drift
    assert_all(recent)
    assert events_prune(older_than_days=30, batch_size=4) == 0


def test_it_defaults_to_the_retention_setting(alice, settings):
    settings.CHATTER_EVENT_RETENTION_DAYS = 10
    old, recent = finished(alice, days=11), finished(alice, days=9)
    old_count = old.events.count()

    assert events_prune_task() == old_count  # the daily task: the setting's retention, default batches
    assert old.events.count() == 0 and recent.events.count() > 0
    assert_seq_gapless(recent)


def test_bad_arguments_are_refused(alice):
    with pytest.raises(InvalidInput):
        events_prune(older_than_days=-1)
    with pytest.raises(InvalidInput):
        events_prune(batch_size=0)


def test_the_command_prunes_and_reports(alice):
    old = finished(alice, days=100)
    count = old.events.count()
    out = StringIO()
    call_command("prune_events", "--days", "30", "--batch-size", "2", stdout=out)
    assert out.getvalue().strip() == f"deleted {count} events of runs finished more than 30 days ago"
    assert old.events.count() == 0

    with pytest.raises(CommandError):
        call_command("prune_events", "--batch-size", "0", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
async def test_the_feed_of_a_pruned_run_ends_at_once(alice):
    from asgiref.sync import sync_to_async

    execution = await sync_to_async(finished)(alice, days=100)
    await sync_to_async(events_prune)(older_than_days=30)

    assert [envelope async for envelope in execution_feed(execution.pk)] == []
