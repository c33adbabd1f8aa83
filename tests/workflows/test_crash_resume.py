"""A run whose worker died goes on from its last checkpoint: the recovery sweep queues it again, at
most CHATTER_RESUME_ATTEMPTS times (then it ends failed / interrupted, tests/workflows/test_sweep.py). LLM calls
recorded before the crash are counted once; the call in flight is recorded from what the crash left (estimated,
as when a run ends so); a node that runs again makes new calls, recorded as such."""
import os
import signal
import sys
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from conversations.models import Message
from tests import launcher
from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, server_env
from tests.invariants import assert_all, assert_seq_gapless
from tests.workflows.test_background_runs import wait_for
from tests.workflows.test_sweep import sweeps_a_sweep_interval_apart
from workflows.models import Checkpoint, ExecutionEvent, LLMCall, NodeExecution, ToolCall, WorkflowExecution
from workflows.services.recovery import HEARTBEAT_LOST_S, execution_sweep
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import execution_create


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def died_while_running(execution) -> WorkflowExecution:
    """The row as a worker leaves it when it claimed the run and died before it wrote anything."""
    stale = timezone.now() - timedelta(seconds=HEARTBEAT_LOST_S + 5)
    WorkflowExecution.objects.filter(pk=execution.pk).update(status="running", started_at=stale, heartbeat_at=stale)
    execution.refresh_from_db()
    return execution


def reconcile() -> None:
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out, stderr=out)  # exits 1 on any drift


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_the_first_of_two_llm_calls_goes_on_from_its_checkpoint(alice, shared_daphne_server,
                                                                                     tmp_path):
    server = shared_daphne_server()
    token = ApiTokenFactory(user=alice).key
    response = httpx.post(f"{server.base_url}/api/v1/chat/", headers={"Authorization": f"Token {token}"},
                          json={"message": "What is 12*7?", "background": True}, timeout=30)
    assert response.status_code == 202, response.text
    execution_id = response.json()["id"]
    # Its own session, so SIGKILL reaches the whole cluster (django-q2 runs tasks in child processes).
    worker = launcher.launch([sys.executable, "manage.py", "qcluster"], cwd=ROOT, new_session=True,
                             env=server_env(tmp_path, CHATTER_LOCAL_TOKEN_DELAY_MS="400"),
                             log=tmp_path / "qcluster-killed.log")
    try:
        answering = ExecutionEvent.objects.filter(execution_id=execution_id, event="node_started",
                                                  data__node_id="model")
        assert wait_for(lambda: answering.count() == 2), (tmp_path / "qcluster-killed.log").read_text()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # in the second model call, the first one recorded
        worker.wait(10)
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "running" and execution.llm_calls == 1
    first_call = LLMCall.objects.get(execution=execution)
    assert Checkpoint.objects.filter(execution=execution, kind="checkpoint").exists()  # written before it waited

    # The sweep after the one that finds it silent queues it again; the queue (synchronous in tests) runs it here,
    # from its last checkpoint.
    assert sweeps_a_sweep_interval_apart(from_s=HEARTBEAT_LOST_S + 1) == []

    execution.refresh_from_db()
    assert (execution.status, execution.resume_attempts) == ("completed", 1), execution.error_message
    calls = list(LLMCall.objects.filter(execution=execution).order_by("id"))
    assert calls[0] == first_call and LLMCall.objects.filter(pk=first_call.pk, estimated=False).count() == 1
    assert [call.estimated for call in calls] == [False, True, False]  # the first once; the one cut short; anew
    assert execution.llm_calls == 3 and execution.total_tokens == sum(call.total_tokens for call in calls)
    assert "84" in execution.output_data["content"]
    reply = Message.objects.get(execution=execution, role="assistant")
    assert (reply.total_tokens, reply.cost) == (execution.total_tokens, execution.cost) and not reply.error_message
    models = list(NodeExecution.objects.filter(execution=execution, node_type="model").order_by("index")
                  .values_list("status", flat=True))
    assert models == ["completed", "failed", "completed"]  # the node cut short, then its new pass
    assert execution.tool_calls == ToolCall.objects.filter(execution=execution).count() >= 1
    names = assert_seq_gapless(execution)
    assert names.count("workflow_started") == 1 and names.count("workflow_requeued") == 1
    assert names.index("workflow_requeued") < names.index("workflow_resumed")
    assert execution.events.get(event="workflow_resumed").data == {"answered": [], "attempt": 1,
                                                                   "from_checkpoint": True}
    assert_all(execution)
    reconcile()


@pytest.mark.django_db
def test_the_sweep_queues_a_run_again_at_most_resume_attempts_times_then_ends_it(alice, settings):
    settings.CHATTER_RESUME_ATTEMPTS = 2
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))

    for attempt in (1, 2):
        died_while_running(execution)
        assert sweeps_a_sweep_interval_apart() == []  # queued again (its task is sent once this test commits)
        execution.refresh_from_db()
        assert (execution.status, execution.resume_attempts) == ("pending", attempt)
        assert execution.events.filter(event="workflow_requeued", data__attempt=attempt).exists()

    died_while_running(execution)
    assert sweeps_a_sweep_interval_apart() == [execution]  # its attempts used up: it ends, as before runs could resume

    execution.refresh_from_db()
    assert (execution.status, execution.error_type, execution.resume_attempts) == ("failed", "interrupted", 2)
    assert_all(execution)


@pytest.mark.django_db
def test_a_run_past_its_timeout_is_never_queued_again(alice):
    execution = died_while_running(execution_create(ChatRequest(owner=alice, message="hi", config={"timeout_s": 10})))
    assert execution_sweep(now=later(60)) == [execution]
    execution.refresh_from_db()
    assert (execution.status, execution.resume_attempts) == ("failed", 0)


@pytest.mark.django_db(transaction=True)
def test_a_run_that_died_before_it_wrote_a_checkpoint_starts_again_from_its_input(alice):
    # A sync turn whose server died with it (a pending row, claimed, nothing written since): a worker goes on.
    execution = died_while_running(execution_create(ChatRequest(owner=alice, message="What is 12*7?")))
    assert not Checkpoint.objects.filter(execution=execution).exists()

    assert sweeps_a_sweep_interval_apart() == []  # queued again, and run by the (synchronous) queue

    execution.refresh_from_db()
    assert (execution.status, execution.resume_attempts, execution.llm_calls) == ("completed", 1, 2)
    resumed = execution.events.get(event="workflow_resumed")
    assert resumed.data == {"answered": [], "attempt": 1, "from_checkpoint": False}
    assert "84" in execution.output_data["content"]
    assert_all(execution)
    reconcile()


@pytest.mark.django_db(transaction=True)
def test_a_fork_whose_worker_died_before_it_wrote_a_checkpoint_starts_again_from_its_parents(alice):
    from tests.api.test_time_travel import TWO_CALLS
    from workflows.selectors import execution_checkpoint_list
    from workflows.services.runs import execution_run_now

    parent = execution_run_now(ExecutionRequest(owner=alice, graph=TWO_CALLS, message="hello",
                                                config={"checkpoints": "every_step"}))
    after_first = next(c for c in execution_checkpoint_list(execution=parent) if c["nodes"] == ["first"])
    fork = died_while_running(execution_create(ExecutionRequest(owner=alice,
                                                                from_checkpoint=after_first["checkpoint_id"])))

    assert sweeps_a_sweep_interval_apart() == []  # queued again, and run by the (synchronous) queue

    fork.refresh_from_db()
    assert (fork.status, fork.forked_from_id, fork.resume_attempts) == ("completed", parent.pk, 1)
    assert list(NodeExecution.objects.filter(execution=fork).values_list("node_id", flat=True)) == ["second", "end"]
    assert fork.llm_calls == 1
    assert_all(fork)
