"""How a run writes its trace (workflows/recorder.py): nodes that wait show their start before they wait, nodes
that do not are written once, completed; and once a run is claimed, every failure still ends it (I4, I6)."""
import pytest
from django.db import OperationalError
from psycopg.errors import DeadlockDetected

from conversations.models import Message
from tests.invariants import assert_all, assert_seq_gapless
from workflows import run_messages, runner
from workflows.models import ExecutionEvent, NodeExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run, execution_stream

pytestmark = pytest.mark.django_db


def test_nodes_that_do_not_wait_are_written_once_completed_with_both_events(alice):
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello")).pk)

    nodes = list(NodeExecution.objects.filter(execution=execution).order_by("index").values_list(
        "node_id", "status", "completed_at"))
    assert [(node_id, status) for node_id, status, _ in nodes] == [
        ("start", "completed"), ("memory", "completed"), ("retrieval", "skipped"), ("model", "completed"),
        ("end", "completed")]
    assert all(completed_at is not None for _, _, completed_at in nodes)
    names = assert_seq_gapless(execution)
    assert names == ["workflow_started", "node_started", "node_completed", "node_started", "node_completed",
                     "node_started", "node_completed", "node_started", "token_usage", "node_completed",
                     "node_started", "node_completed", "message_saved", "workflow_completed"]
    assert_all(execution)


@pytest.mark.django_db(transaction=True)
def test_a_watcher_sees_each_waiting_node_start_before_its_tokens_and_tool_calls(alice):
    execution = execution_create(ChatRequest(owner=alice, message="What is 12*7?", mode="stream"))
    envelopes = list(execution_stream(execution_id=execution.pk))

    persisted = [e for e in envelopes if e["seq"] is not None]
    assert [e["seq"] for e in persisted] == list(range(1, len(persisted) + 1))
    current = None  # the node whose node_started the watcher saw last
    for envelope in envelopes:
        if envelope["event"] == "node_started":
            current = envelope["data"]["node_id"]
        elif envelope["event"] in ("token", "token_usage", "tool_called"):
            assert current == envelope["data"]["node_id"], envelope
        elif envelope["event"] in ("node_completed", "node_failed"):
            current = None
    assert sum(e["event"] == "token" for e in envelopes) > 0
    assert_all(execution)


def test_a_failure_in_the_set_up_after_the_claim_still_ends_the_run(alice, monkeypatch):
    real = runner.run_recorder

    def set_up_breaks(execution, **parts):
        recorder = real(execution, **parts)
        if parts.get("fresh"):  # the run's own; the one that ends it from its rows is built elsewhere, not fresh
            def started(data):
                raise RuntimeError("set-up broke")
            recorder.started = started
        return recorder

    monkeypatch.setattr(runner, "run_recorder", set_up_breaks)  # the recorder the runner builds for a run
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk)

    assert (execution.status, execution.error_type) == ("failed", "internal_error")
    assert "set-up broke" in execution.error_message
    assert assert_seq_gapless(execution)[-1] == "workflow_failed"
    assert Message.objects.get(execution=execution, role="assistant").error_message == execution.error_message
    assert_all(execution)


def test_a_run_whose_recorder_cannot_even_be_built_is_ended_from_its_rows(alice, monkeypatch):
    real = runner.run_recorder

    def unbuildable(execution, **parts):
        if parts.get("fresh"):  # the run's own; the one that ends it from its rows is built elsewhere, not fresh
            raise RuntimeError("no recorder")
        return real(execution, **parts)

    monkeypatch.setattr(runner, "run_recorder", unbuildable)  # the recorder the runner builds for a run
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk)

    assert (execution.status, execution.error_type) == ("failed", "internal_error")
    assert "no recorder" in execution.error_message
    assert assert_seq_gapless(execution) == ["message_saved", "workflow_failed"]
    assert_all(execution)


@pytest.mark.parametrize("hook", ["token", "cancel_requested"])
def test_the_runs_own_failure_during_a_model_call_is_internal_not_the_providers(alice, monkeypatch, hook):
    """A hook the model call's stream loop calls (a token's write and event, a cancel check) that fails is the run's
    own failure: internal_error, the call recorded with what it streamed, not a provider_error."""
    real = runner.run_recorder
    tokens = []

    def breaks_mid_stream(execution, **parts):
        recorder = real(execution, **parts)
        if parts.get("fresh"):
            own_token, own_check = recorder.token, recorder.cancel_requested

            def token(*args, **kwargs):
                tokens.append(args)
                if hook == "token" and len(tokens) == 3:  # mid-stream: the reply under way
                    raise OperationalError("disk I/O error")
                return own_token(*args, **kwargs)

            def cancel_requested():
                if hook == "cancel_requested" and len(tokens) >= 2:
                    raise OperationalError("disk I/O error")
                return own_check()
            recorder.token, recorder.cancel_requested = token, cancel_requested
        return recorder

    monkeypatch.setattr(runner, "run_recorder", breaks_mid_stream)  # the recorder the runner builds for a run
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello there")).pk)

    assert (execution.status, execution.error_type) == ("failed", "internal_error"), execution.error_message
    assert "own work failed during its model call: OperationalError: disk I/O error" in execution.error_message
    assert execution.llm_calls == 1 and execution.total_tokens > 0  # the call, cut short, is booked
    assert not NodeExecution.objects.filter(execution=execution, status="running").exists()
    assert_all(execution)


def test_a_run_whose_ending_fails_is_ended_from_its_ledger_keeping_its_usage(alice, monkeypatch):
    real = run_messages.message_save
    failures = []

    def refuse_the_first_reply(**kwargs):
        if kwargs["role"] == "assistant" and not failures:
            failures.append(kwargs)
            raise RuntimeError("the reply could not be stored")
        return real(**kwargs)

    monkeypatch.setattr(run_messages, "message_save", refuse_the_first_reply)
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="What is 12*7?")).pk)

    assert failures
    assert (execution.status, execution.error_type) == ("failed", "internal_error")
    assert "could not be recorded" in execution.error_message
    assert execution.llm_calls == 2 and execution.tool_calls == 1 and execution.total_tokens > 0
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.total_tokens == execution.total_tokens and "could not be recorded" in reply.error_message
    # What the run still held (its last LLM call) was written before it ended from its rows; none is left running.
    assert not NodeExecution.objects.filter(execution=execution, status="running").exists()
    assert ExecutionEvent.objects.filter(execution=execution).order_by("-seq").first().event == "workflow_failed"
    assert_all(execution)


@pytest.mark.django_db(transaction=True)  # retried at its outermost transaction: none may be open around the run
def test_an_ending_the_database_refuses_once_is_tried_again_and_completes(alice, monkeypatch):
    real = run_messages.message_save
    refused = []

    def deadlocked_once(**kwargs):
        if kwargs["role"] == "assistant" and not refused:
            refused.append(kwargs)
            raise OperationalError("deadlock detected") from DeadlockDetected("deadlock detected")
        return real(**kwargs)

    monkeypatch.setattr(run_messages, "message_save", deadlocked_once)
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="What is 12*7?")).pk)

    assert refused and execution.status == "completed"
    # Nothing of the failed attempt was kept, and nothing the run held was lost: every node, each event once.
    assert list(NodeExecution.objects.filter(execution=execution).order_by("index").values_list(
        "node_id", "status")) == [("start", "completed"), ("memory", "completed"), ("retrieval", "skipped"),
                                  ("model", "completed"), ("tools", "completed"), ("model", "completed"),
                                  ("end", "completed")]
    names = assert_seq_gapless(execution)
    assert names.count("node_completed") == 7 and names[-2:] == ["message_saved", "workflow_completed"]
    assert Message.objects.filter(execution=execution).count() == 2
    assert_all(execution)
