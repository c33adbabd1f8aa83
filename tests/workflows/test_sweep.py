"""Recovery (docs/operations/audit.md#recovery, I4): the sweep ends, as `failed` / `interrupted`, runs whose worker
died (their heartbeat silent at one sweep and still at the next) and runs pending or running past their timeout,
through the same terminal path as any run: usage kept (I5), terminal event last (I6), I1–I3 exact. Plus the django-q2
schedules that run it, and a real worker killed with SIGKILL."""
import os
import signal
import sys
import time
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from audit.selectors import audit_chain_verify
from conversations.models import Conversation, Message
from tests import launcher
from tests.clock import at
from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, server_env, start_worker, stop_process
from tests.invariants import assert_all, assert_seq_gapless
from tests.workflows.test_background_runs import wait_for
from workflows import heartbeat, recorder
from workflows.models import ExecutionEvent, LLMCall, NodeExecution, ToolCall, WorkflowExecution
from workflows.services.recovery import HEARTBEAT_LOST_S, REQUEUE_AFTER_S, SWEEP_GRACE_S, execution_sweep
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run, execution_stream
from workflows.services.schedules import scheduler_ensure
from workflows.tasks import execution_sweep_task

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_resume_attempts_left(settings):
    """What the sweep does to a run whose worker died once its re-queues are used up (CHATTER_RESUME_ATTEMPTS;
    the re-queue itself: tests/workflows/test_crash_resume.py): it ends it, as it did before runs could resume."""
    settings.CHATTER_RESUME_ATTEMPTS = 0


NEXT_SWEEP_S = 60  # from one sweep to the next (CHATTER_SWEEP_INTERVAL_S's default)


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def sweeps_a_sweep_interval_apart(*, from_s: float = 0) -> list[WorkflowExecution]:
    """The sweep `from_s` seconds from now, then the next one: the first to find a run whose worker stopped silent
    only notes so; the next takes it over. What the second ended."""
    assert execution_sweep(now=later(from_s)) == []
    return execution_sweep(now=later(from_s + NEXT_SWEEP_S))


def beats_stopped(execution, beats: heartbeat._Heartbeat) -> None:
    """The run's process beats no more (cut off from the database, as far as a sweep can tell): its last beat landed."""
    beats.discard(execution.pk)
    assert wait_for(lambda: beats._thread is None)  # the heartbeat thread has ended: nothing of it is still writing


def claimed_by_a_worker(execution, *, beat_seconds_ago: float, started_seconds_ago: float | None = None):
    """The row as a worker leaves it when it claims a run (execution_run) and then dies."""
    now = timezone.now()
    started = now - timedelta(seconds=beat_seconds_ago if started_seconds_ago is None else started_seconds_ago)
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        status="running", started_at=started, heartbeat_at=now - timedelta(seconds=beat_seconds_ago))
    execution.refresh_from_db()
    return execution


def assert_interrupted(execution, reason: str):
    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == ("failed", "interrupted")
    assert reason in execution.error_message
    last = execution.events.order_by("-seq").first()
    assert last.event == "workflow_failed" and last.data["error_type"] == "interrupted"
    assert_all(execution)


# --- what the sweep ends, and what it leaves alone ---------------------------------------------------------
def test_a_running_run_whose_heartbeat_stopped_is_interrupted_by_the_sweep_after_the_one_that_found_it(alice):
    execution = claimed_by_a_worker(execution_create(ChatRequest(owner=alice, message="hi", mode="background")),
                                    beat_seconds_ago=HEARTBEAT_LOST_S + 5)

    assert execution_sweep() == []  # the first sweep to find it silent only notes so: its worker may be alive
    execution.refresh_from_db()
    assert execution.status == "running" and execution.silent_since is not None
    assert execution_sweep(now=later(NEXT_SWEEP_S)) == [execution]

    assert_interrupted(execution, "worker stopped")
    reply = Message.objects.get(execution=execution, role="assistant")
    assert (reply.content, reply.total_tokens) == ("", 0) and "interrupted" in reply.error_message
    assert Conversation.objects.get(pk=execution.conversation_id).message_count == 2


@pytest.mark.django_db(transaction=True)
def test_a_live_run_whose_beats_a_database_outage_held_back_is_never_taken_over(alice, monkeypatch):
    """A database outage kept a live worker from beating for longer than HEARTBEAT_LOST_S; the first sweep after it
    finds the run silent, and the worker's beat lands only after that sweep (its connection pool reconnects after a
    back-off): the run stays its worker's, not run again elsewhere with its model calls made twice. A run whose
    worker died, silent as long, is taken over by the next sweep."""
    outage_s = HEARTBEAT_LOST_S + 10
    live, dead = (claimed_by_a_worker(execution_create(ChatRequest(owner=alice, message="hi")),
                                      beat_seconds_ago=outage_s + NEXT_SWEEP_S) for _ in range(2))
    # The database came back a sweep interval ago, and a sweep ran at once (django-q2 runs an overdue one then).
    assert execution_sweep(now=later(-NEXT_SWEEP_S)) == []

    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.05)
    beats = heartbeat._Heartbeat()
    beats.add(live.pk)  # the live worker has its connection back: its beat lands
    assert wait_for(lambda: WorkflowExecution.objects.get(pk=live.pk).heartbeat_at > later(-5))
    beats_stopped(live, beats)

    assert execution_sweep() == [dead]  # the next sweep

    live.refresh_from_db()
    assert (live.status, live.resume_attempts, live.silent_since) == ("running", 0, None)
    assert not live.events.filter(event__in=("workflow_requeued", "workflow_failed")).exists()
    assert_interrupted(dead, "worker stopped")


def test_a_running_run_with_a_fresh_heartbeat_is_left_alone_until_its_timeout_passes(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hi", config={"timeout_s": 60}))
    claimed_by_a_worker(execution, beat_seconds_ago=1)

    assert execution_sweep() == []
    assert execution_sweep(now=later(HEARTBEAT_LOST_S - 2)) == []
    execution.refresh_from_db()
    assert execution.status == "running"

    # Its heartbeat is fresh but it ran past its timeout and grace: a hung run is ended too.
    WorkflowExecution.objects.filter(pk=execution.pk).update(heartbeat_at=later(60 + SWEEP_GRACE_S))
    assert execution_sweep(now=later(60 + SWEEP_GRACE_S + 2)) == [execution]
    assert_interrupted(execution, "ran past its timeout (60 s)")


def waiting_in_the_queue(execution):
    """Its task waits in django-q2's queue for a worker (the test settings run tasks at once, so it is put there
    as the broker puts it)."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    get_broker().enqueue(SignedPackage.dumps({
        "id": f"task-{execution.pk}", "name": f"execution-{execution.pk}", "func": "workflows.tasks.execution_run_task",
        "args": (str(execution.pk),), "kwargs": {}}))
    return execution


def test_a_pending_run_that_never_started_within_its_timeout_is_interrupted(alice):
    execution = waiting_in_the_queue(execution_create(ChatRequest(owner=alice, message="hi", mode="background",
                                                                  config={"timeout_s": 30})))

    assert execution_sweep(now=later(30)) == []
    assert execution_sweep(now=later(30 + SWEEP_GRACE_S + 1)) == [execution]

    assert_interrupted(execution, "did not start within its timeout (30 s)")
    assert NodeExecution.objects.filter(execution=execution).count() == 0
    assert execution_run(execution_id=execution.pk).status == "failed"  # a late delivery finds nothing to run


def test_a_run_cancelled_after_its_worker_died_ends_cancelled_at_the_sweep(alice, api, settings):
    settings.CHATTER_RESUME_ATTEMPTS = 2  # not cancelled, it would be queued again to go on
    execution = claimed_by_a_worker(execution_create(ChatRequest(owner=alice, message="hi", mode="background")),
                                    beat_seconds_ago=HEARTBEAT_LOST_S + 5)
    response = api.post(f"/api/v1/executions/{execution.pk}/cancel/")
    assert response.status_code == 200 and response.json()["cancel_requested"]  # asked: no process is left to stop

    assert sweeps_a_sweep_interval_apart() == [execution]

    execution.refresh_from_db()
    assert (execution.status, execution.error_type, execution.resume_attempts) == ("cancelled", "cancelled", 0)
    assert "worker stopped" in execution.error_message
    assert execution.events.order_by("-seq").first().event == "workflow_cancelled"
    assert not execution.events.filter(event="workflow_requeued").exists()
    assert Message.objects.get(execution=execution, role="assistant").error_message
    assert_all(execution)
    assert execution_run(execution_id=execution.pk).status == "cancelled"  # a late delivery finds nothing to run


def test_a_run_cancelled_as_the_sweep_queued_it_again_ends_cancelled_at_the_next_sweep(alice, settings):
    settings.CHATTER_RESUME_ATTEMPTS = 2
    execution = claimed_by_a_worker(execution_create(ChatRequest(owner=alice, message="hi", mode="background")),
                                    beat_seconds_ago=HEARTBEAT_LOST_S + 5)
    assert sweeps_a_sweep_interval_apart() == []  # queued again (its task is sent once this test's transaction commits)
    # The cancel read it `running` and asked it to stop just after: pending, no worker claims it (cancel_requested).
    WorkflowExecution.objects.filter(pk=execution.pk).update(cancel_requested=True)

    assert execution_sweep() == [execution]

    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == ("cancelled", "cancelled")
    assert_all(execution)


# --- pending runs whose task was lost are queued again, long before their timeout ---------------------------
def test_a_pending_run_without_a_task_is_queued_again_and_runs(alice):
    execution = execution_create(ChatRequest(owner=alice, message="What is 12*7?", mode="background"))
    # No task: e.g. the process that wrote it died before its commit hook queued it.

    assert execution_sweep(now=later(REQUEUE_AFTER_S - 1)) == []
    execution.refresh_from_db()
    assert execution.status == "pending"

    assert execution_sweep(now=later(REQUEUE_AFTER_S + 1)) == []  # queued again (the test settings run it at once)
    execution.refresh_from_db()
    assert execution.status == "completed"
    assert "84" in Message.objects.get(execution=execution, role="assistant").content
    assert_all(execution)
    # A late delivery of its first task finds it claimed and does nothing.
    events = list(execution.events.values_list("seq", "event"))
    assert execution_run(execution_id=execution.pk).status == "completed"
    assert list(execution.events.values_list("seq", "event")) == events


def test_a_pending_run_whose_task_waits_for_a_worker_is_not_queued_again(alice):
    from django_q.models import OrmQ

    execution = waiting_in_the_queue(execution_create(ChatRequest(owner=alice, message="hi", mode="background")))

    assert execution_sweep(now=later(REQUEUE_AFTER_S + 60)) == []
    execution.refresh_from_db()
    assert execution.status == "pending" and OrmQ.objects.count() == 1


def test_a_run_with_a_short_timeout_is_queued_again_after_a_third_of_it(alice):
    """A run with a short timeout is queued again after a third of it, still well before the sweep ends it."""
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background", config={"timeout_s": 9}))

    assert execution_sweep(now=later(4)) == []
    execution.refresh_from_db()
    assert execution.status == "completed"


def test_finished_runs_are_never_touched(alice):
    done = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk)
    events = list(done.events.values_list("seq", "event"))

    assert execution_sweep(now=later(10 * 24 * 3600)) == []
    done.refresh_from_db()
    assert done.status == "completed" and list(done.events.values_list("seq", "event")) == events


@pytest.mark.django_db(transaction=True)
def test_a_run_swept_while_its_worker_still_runs_stops_and_writes_nothing_after_the_terminal_event(alice, settings,
                                                                                                   monkeypatch):
    """The sweep wins over a worker whose beats no longer land (cut off from the database, as far as the sweeps can
    tell); the worker's next write collides with the sweep's events, is rolled back, and it stops."""
    # The answer ("The answer: 12*7 = 84.") streams for 2 s after its first word: the sweep, asked then, finds the
    # run still going when a loaded machine lets it come a second or more late.
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 500
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 3600)
    monkeypatch.setattr(recorder, "heartbeat", heartbeat._Heartbeat())  # no beat lands in this test
    execution = execution_create(ChatRequest(owner=alice, message="What is 12*7?", mode="stream"))
    swept, streamed = [], []
    for envelope in execution_stream(execution_id=execution.pk):
        streamed.append(envelope)
        if envelope["event"] == "token" and not swept:  # the answer, after the tool call, is streaming
            swept = sweeps_a_sweep_interval_apart(from_s=HEARTBEAT_LOST_S + 1)
    assert [e.pk for e in swept] == [execution.pk]

    assert_interrupted(execution, "worker stopped")
    names = assert_seq_gapless(execution)
    assert names[-3:] == ["node_failed", "message_saved", "workflow_failed"]
    # The first call (the tool request) was recorded before the sweep; the second, in flight, is recorded by the
    # sweep from what it sent (its prompt estimate, written as it started), estimated and flagged (I5).
    first_call, in_flight = LLMCall.objects.filter(execution=execution).order_by("id")
    assert not first_call.estimated and first_call.total_tokens > 0
    assert in_flight.estimated and in_flight.prompt_tokens > 0
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.total_tokens == execution.total_tokens == first_call.total_tokens + in_flight.total_tokens
    assert reply.usage_estimated and execution.llm_calls == 2
    assert NodeExecution.objects.filter(execution=execution, status="running").count() == 0
    # The stream got the sweep's events from the database, exactly once each: it still ends with the terminal one.
    persisted = [(e["seq"], e["event"]) for e in streamed if e["seq"] is not None]
    assert persisted == list(execution.events.order_by("seq").values_list("seq", "event"))
    # Its audit rows wait for the run's end, which never came from its process: the sweep appends them from its
    # rows (the start, the tool call it recorded), before its own, and the chain verifies.
    audit_queue_flush()  # queued for the chain (PostgreSQL), as a read of the trail sees them
    audited = AuditEvent.objects.filter(target_id=str(execution.pk)).order_by("id")
    assert [(a.action, a.data.get("tool")) for a in audited] == [
        ("execution.started", None), ("tool.called", "calculator"), ("execution.failed", None)]
    assert audited[1].data["arguments"] == ToolCall.objects.get(execution=execution).arguments
    assert audit_chain_verify().valid


@pytest.mark.django_db(transaction=True)
def test_a_run_in_progress_keeps_its_heartbeat_fresh(alice, settings, monkeypatch):
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(recorder, "heartbeat", heartbeat._Heartbeat())  # not one still asleep for 5 s
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 100
    execution = execution_create(ChatRequest(owner=alice, message="hello there, tell me a long story", mode="stream",
                                             config={"enable_tools": False}))
    beats = set()
    for envelope in execution_stream(execution_id=execution.pk):
        if envelope["event"] == "token":
            beats.add(WorkflowExecution.objects.get(pk=execution.pk).heartbeat_at)
    assert len(beats) >= 3  # refreshed while the model streamed, from the heartbeat thread
    execution.refresh_from_db()
    assert execution.status == "completed"


# --- the command, the tasks and their schedules ---------------------------------------------------------
def test_the_command_sweeps_and_names_the_runs_it_ended(alice, monkeypatch):
    execution = claimed_by_a_worker(execution_create(ChatRequest(owner=alice, message="hi", mode="background")),
                                    beat_seconds_ago=HEARTBEAT_LOST_S + 5)
    out = StringIO()
    call_command("sweep_executions", stdout=out)
    assert out.getvalue().strip() == "0 runs interrupted"  # found silent, noted

    at(monkeypatch, later(NEXT_SWEEP_S))  # its next run
    out = StringIO()
    call_command("sweep_executions", stdout=out)
    assert f"interrupted {execution.pk}" in out.getvalue() and "1 runs interrupted" in out.getvalue()
    assert_interrupted(execution, "worker stopped")

    out = StringIO()
    call_command("sweep_executions", stdout=out)
    assert out.getvalue().strip() == "0 runs interrupted"


def test_the_sweep_task_returns_how_many_runs_it_ended(alice, monkeypatch):
    claimed_by_a_worker(execution_create(ChatRequest(owner=alice, message="hi", mode="background")),
                        beat_seconds_ago=HEARTBEAT_LOST_S + 5)
    assert execution_sweep_task() == 0  # found silent, noted
    at(monkeypatch, later(NEXT_SWEEP_S))
    assert execution_sweep_task() == 1
    assert execution_sweep_task() == 0


def test_the_schedules_exist_once_each_and_follow_the_sweep_interval(settings):
    from django_q.models import Schedule

    settings.CHATTER_SWEEP_INTERVAL_S = 150
    scheduler_ensure()
    scheduler_ensure()  # a restart or re-migrate

    schedules = {s.name: s for s in Schedule.objects.all()}
    assert sorted(schedules) == ["chatter-audit-access-denied", "chatter-knowledge-lapsed-ingestions",
                                 "chatter-prune-events", "chatter-reconcile-aggregates", "chatter-schedules",
                                 "chatter-sweep-executions", "chatter-thread-expiry-sweep", "chatter-webhooks-sweep"]
    sweep = schedules["chatter-sweep-executions"]
    assert (sweep.func, sweep.schedule_type, sweep.minutes, sweep.repeats) == (
        "workflows.tasks.execution_sweep_task", Schedule.MINUTES, 3, -1)
    assert schedules["chatter-reconcile-aggregates"].schedule_type == Schedule.HOURLY
    assert schedules["chatter-prune-events"].func == "workflows.tasks.events_prune_task"
    assert schedules["chatter-prune-events"].schedule_type == Schedule.DAILY

    settings.CHATTER_SWEEP_INTERVAL_S = 20
    scheduler_ensure()
    assert Schedule.objects.get(name="chatter-sweep-executions").minutes == 1
    assert Schedule.objects.count() == 8


# --- a real worker process killed with SIGKILL mid-run -------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_leaves_a_run_the_sweep_interrupts(alice, shared_daphne_server, tmp_path):
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
        time.sleep(0.5)  # a word or so into the answer
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)

    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "running" and execution.llm_calls == 1
    assert execution_sweep() == []  # its heartbeat is still recent: a live worker could own it

    assert [e.pk for e in sweeps_a_sweep_interval_apart(from_s=HEARTBEAT_LOST_S + 1)] == [execution.pk]

    assert_interrupted(execution, "worker stopped")
    first_call, in_flight = LLMCall.objects.filter(execution=execution).order_by("id")
    assert not first_call.estimated and in_flight.estimated and in_flight.prompt_tokens > 0
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.total_tokens == execution.total_tokens == first_call.total_tokens + in_flight.total_tokens
    assert "interrupted" in reply.error_message
    answer = NodeExecution.objects.filter(execution=execution, node_type="model").order_by("index").last()
    assert answer.status == "failed" and "worker stopped" in answer.error_message


# --- a real cluster killed with SIGKILL while it held queued runs ---------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_runs_a_killed_worker_had_taken_are_queued_again_and_run_once_by_a_new_one(alice, tmp_path,
                                                                                   shared_daphne_server):
    from django_q.models import OrmQ

    server = shared_daphne_server()  # a server queues the runs for real workers (this process runs tasks in place)
    key = ApiTokenFactory(user=alice).key
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {key}"}, timeout=30) as client:
        runs = [WorkflowExecution.objects.get(pk=client.post("/api/v1/chat/", json={
                    "message": text, "background": True, "enable_tools": False}).raise_for_status().json()["id"])
                for text in ("hello there, tell me a long story about the sea", "What is 12*7?", "And 13*7?")]
    assert OrmQ.objects.count() == 3  # queued once each committed

    # One worker process, busy streaming the first answer slowly: the cluster has taken the other two tasks too
    # (one waits in its internal queue, one in its pusher). Its own session, so SIGKILL reaches every process.
    doomed = launcher.launch([sys.executable, "manage.py", "qcluster"], cwd=ROOT, new_session=True,
                             env=server_env(tmp_path, CHATTER_WORKERS="1", CHATTER_LOCAL_TOKEN_DELAY_MS="300"),
                             log=tmp_path / "qcluster-killed.log")
    try:
        assert wait_for(lambda: WorkflowExecution.objects.filter(pk=runs[0].pk, status="running").exists()
                        and OrmQ.objects.filter(lock__gt=timezone.now()).count() == 3), \
            (tmp_path / "qcluster-killed.log").read_text()
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    assert [WorkflowExecution.objects.get(pk=run.pk).status for run in runs] == ["running", "pending", "pending"]
    assert OrmQ.objects.filter(lock__gt=timezone.now() + timedelta(minutes=5)).count() == 3  # locked for `retry`

    worker = start_worker(tmp_path)
    try:
        # The sweep, half a minute on (not the 7 minutes django-q2 keeps the dead cluster's tasks locked): the
        # two runs the dead worker had only taken are queued again; the one it was running is found silent, and
        # interrupted by the next sweep.
        assert execution_sweep(now=later(REQUEUE_AFTER_S + 1)) == []
        assert wait_for(lambda: all(WorkflowExecution.objects.get(pk=run.pk).status == "completed"
                                    for run in runs[1:]))
        swept = execution_sweep(now=later(REQUEUE_AFTER_S + 1 + NEXT_SWEEP_S))
        assert [execution.pk for execution in swept] == [runs[0].pk]
        completed = {run.pk: list(ExecutionEvent.objects.filter(execution_id=run.pk).values_list("seq", "event"))
                     for run in runs[1:]}

        # The dead cluster's own tasks come due again (as after `retry`): the new worker delivers them, and each
        # finds its run already claimed.
        OrmQ.objects.filter(lock__gt=timezone.now()).update(lock=timezone.now())
        assert wait_for(lambda: not OrmQ.objects.exists())
    finally:
        stop_process(worker)

    assert_interrupted(runs[0], "worker stopped")
    for run in runs[1:]:
        run.refresh_from_db()
        assert run.status == "completed"
        assert list(ExecutionEvent.objects.filter(execution_id=run.pk).values_list("seq", "event")) == completed[run.pk]
        assert Message.objects.filter(execution=run, role="assistant").count() == 1
        assert_all(run)
