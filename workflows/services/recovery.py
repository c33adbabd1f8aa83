"""Recovery and retention: the sweep that queues again (to go on from its last checkpoint) or ends runs whose
worker died, and ends runs that ran past their timeout (I4); the pruning of old event logs and checkpoints."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.db import retried_on_conflict
from core.errors import InvalidInput, RunCancelled
from engine.runtime import RunInterrupted
from workflows.ending import end_from_ledger
from workflows.heartbeat import HEARTBEAT_S
from workflows.models import Checkpoint, ExecutionEvent, WorkflowExecution
from workflows.recorder import run_recorder
from workflows.services.queue import execution_enqueue
from workflows.services.waiting import executions_waiting_expire

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status


# --- recovery and retention -----------------------------------------------------------------------------
SWEEP_SCHEDULE_NAME = "chatter-sweep-executions"
PRUNE_SCHEDULE_NAME = "chatter-prune-events"
# A running run's process refreshes its heartbeat every HEARTBEAT_S; several missed beats mean it may be gone. A sweep
# that finds it so only notes when (silent_since); a later one takes it over if it stayed silent long enough (_gone).
HEARTBEAT_LOST_S = 6 * HEARTBEAT_S
# Past its timeout a live run ends itself at its next token or node boundary; this is the slack it gets.
SWEEP_GRACE_S = 10
# A background or scheduled run still pending this long after its task was queued (or taken by a worker) is
# handed to the queue again (never more than its timeout / 3): its task was lost with a worker that died.
REQUEUE_AFTER_S = 30
QUEUED_MODES = (WorkflowExecution.Mode.BACKGROUND, WorkflowExecution.Mode.SCHEDULED)
TASK_NAME_PREFIX = "execution-"  # workflows.services.queue.execution_enqueue names each task so
WORKER_STOPPED = "its worker stopped"


def _due_at(execution: WorkflowExecution) -> datetime:
    """When a pending run may start: at once, or, delayed (after_seconds), at its run_after."""
    return max(execution.created_at, execution.run_after or execution.created_at)


def _timeout_s(execution: WorkflowExecution) -> int:
    return execution.config.get("timeout_s") or settings.CHATTER_EXECUTION_TIMEOUT_S


def execution_swept_after(execution: WorkflowExecution) -> datetime:
    """When the sweep ends a running run whatever its heartbeat: past its timeout, and the grace it gets."""
    started = execution.started_at or execution.created_at
    return started + timedelta(seconds=_timeout_s(execution) + SWEEP_GRACE_S)


def _sweep_reason(execution: WorkflowExecution, *, now: datetime) -> str | None:
    """Why the sweep must end this pending or running run, or None while it may still be alive."""
    timeout_s = _timeout_s(execution)
    deadline = timedelta(seconds=timeout_s + SWEEP_GRACE_S)
    if execution.status == Status.PENDING:
        if execution.cancel_requested:  # cancelled as the sweep queued it again: no worker will claim it
            return "no worker took it again"
        if _due_at(execution) + deadline < now:
            return f"it did not start within its timeout ({timeout_s} s)"
        return None
    if execution_swept_after(execution) < now:
        return f"it ran past its timeout ({timeout_s} s)"
    if _gone(execution, now=now):
        return f"{WORKER_STOPPED} (no heartbeat for {int((now - _last_beat(execution)).total_seconds())} s)"
    return None


def _last_beat(execution: WorkflowExecution) -> datetime:
    return execution.heartbeat_at or execution.started_at or execution.created_at


def _silent(execution: WorkflowExecution, *, now: datetime) -> bool:
    """Whether a running run has not beaten for HEARTBEAT_LOST_S: its process died, or could not write its beats."""
    return execution.status == Status.RUNNING and _last_beat(execution) + timedelta(seconds=HEARTBEAT_LOST_S) < now


def _silence_seen(execution: WorkflowExecution) -> datetime | None:
    """When a sweep first found the run's present silence (its mark, made after its last beat), or None."""
    mark = execution.silent_since
    return mark if mark is not None and mark >= _last_beat(execution) else None


def _gone(execution: WorkflowExecution, *, now: datetime) -> bool:
    """Whether a silent run's process is taken for dead. Not at the first sweep that finds it silent: that one may
    be the first to reach the database after an outage that kept a live process from beating, and that process may
    take as long again to get a connection back (psycopg_pool's reconnect back-off doubles) and beat. So the run is
    gone once a sweep saw it silent and no beat has come for HEARTBEAT_LOST_S since, nor for as long as it had been
    silent before that sweep."""
    seen = _silence_seen(execution)
    return _silent(execution, now=now) and seen is not None and now - seen >= max(
        timedelta(seconds=HEARTBEAT_LOST_S), seen - _last_beat(execution))


def executions_silence_note(*, runs: list[WorkflowExecution], now: datetime) -> int:
    """Note on the running runs among `runs` whose heartbeat is silent, and was not yet seen so by a sweep, that it
    is from `now` (silent_since), in one UPDATE made only while each is still silent: a beat landing meanwhile (the
    heartbeat clears the mark in its own UPDATE) keeps its run unmarked. Returns how many were noted."""
    unseen = [execution.pk for execution in runs if _silent(execution, now=now) and _silence_seen(execution) is None]
    if not unseen:
        return 0
    cutoff = now - timedelta(seconds=HEARTBEAT_LOST_S)
    return WorkflowExecution.objects.filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at=None), pk__in=unseen,
                                            status=Status.RUNNING).update(silent_since=now)


def execution_interrupt(*, execution: WorkflowExecution, reason: str) -> WorkflowExecution | None:
    """End a pending or running run from outside its process as `failed` / `interrupted`, through
    execution_finish: the usage its ledger holds stays on the execution, its nodes and (for a chat turn) an
    assistant message carrying the last text known and the error (I5); nodes left running fail; the terminal
    event comes last (I6). A run its owner asked to cancel ends `cancelled` so instead: no process is left to
    cancel it (a worker never claims a pending run with cancel_requested, runs._pending_claim). None when the run
    had already ended."""
    error = RunCancelled(f"the run was cancelled: {reason}") if execution.cancel_requested else RunInterrupted(
        f"the run was interrupted: {reason}")
    return end_from_ledger(execution_id=execution.pk, error=error)


@retried_on_conflict
def execution_requeue_after_crash(*, execution_id, reason: str, silent_since: datetime) -> WorkflowExecution | None:
    """A running run whose worker died goes back to `pending` and to the queue, to go on from its last checkpoint
    (workflows.runner, after_crash): nodes left running fail as for an ending (the call in flight recorded from
    what its node row and heartbeat hold, I5), with a `workflow_requeued` event, in one transaction. LLM calls
    already recorded are not made again; a node that runs again makes new ones, recorded as such. None when the
    run was no longer running, or has beaten since the sweep found it silent at `silent_since` (its beat cleared
    that)."""
    with transaction.atomic():
        locked = WorkflowExecution.objects.select_for_update(of=("self",)).select_related("owner").filter(
            pk=execution_id, status=Status.RUNNING, silent_since=silent_since).first()
        if locked is None:
            return None
        attempt = locked.resume_attempts + 1
        recorder = run_recorder(locked)  # counts the events under the lock: its seq follows the last
        recorder.interrupted(error=f"the run was interrupted: {reason}; it goes on from its last checkpoint")
        recorder.emit("workflow_requeued", {"attempt": attempt, "reason": reason})
        recorder.audit("execution.requeued", {"attempt": attempt, "reason": reason})
        WorkflowExecution.objects.filter(pk=locked.pk, status=Status.RUNNING).update(
            status=Status.PENDING, resume_attempts=attempt, stream_progress={}, heartbeat_at=None, silent_since=None,
            # a background answer it was claimed with is in its checkpoints now, or asked again (as for any run)
            output_data={k: v for k, v in (locked.output_data or {}).items() if k != "answers"},
            **recorder.counters_increments())
        recorder.write_held()
        transaction.on_commit(lambda: execution_enqueue(execution_id=locked.pk))
    locked.status, locked.resume_attempts = Status.PENDING, attempt
    return locked


def _runs_in_progress():
    return WorkflowExecution.objects.filter(status__in=(Status.PENDING, Status.RUNNING)).order_by(
        "created_at").only("id", "status", "mode", "config", "created_at", "started_at", "heartbeat_at",
                           "silent_since", "resume_attempts", "run_after", "cancel_requested", "output_data")


def _requeue_after(execution: WorkflowExecution) -> timedelta:
    timeout_s = execution.config.get("timeout_s") or settings.CHATTER_EXECUTION_TIMEOUT_S
    return timedelta(seconds=min(REQUEUE_AFTER_S, timeout_s / 3))


def _queued(execution: WorkflowExecution) -> bool:
    """A pending run a worker's task starts: a background or scheduled one, or one answered in background mode
    (workflows.services.waiting: its answers wait on it for a worker)."""
    return execution.mode in QUEUED_MODES or "answers" in (execution.output_data or {})


def _queued_tasks(*, now: datetime) -> dict[str, datetime | None]:
    """The runs that have a task in django-q2's queue (ORM broker), each with when a worker took its newest task,
    or None while one waits to be taken. A task a worker takes is locked for Q_CLUSTER["retry"] seconds; if the
    worker dies it stays locked that long, although no one runs it."""
    from django_q.brokers import get_broker
    from django_q.models import OrmQ

    retry = timedelta(seconds=settings.Q_CLUSTER["retry"])
    taken: dict[str, datetime | None] = {}
    for task in OrmQ.objects.filter(key=get_broker().list_key).only("payload", "lock"):
        name = task.name() or ""
        if not name.startswith(TASK_NAME_PREFIX):
            continue
        execution_id = name.removeprefix(TASK_NAME_PREFIX)
        taken_at = task.lock - retry if task.lock is not None and task.lock > now else None
        if execution_id not in taken or taken_at is None or (
                taken[execution_id] is not None and taken_at > taken[execution_id]):
            taken[execution_id] = taken_at
    return taken


def executions_requeue_lost(*, runs: list[WorkflowExecution], now: datetime) -> list[WorkflowExecution]:
    """Queue again the pending background and scheduled runs among `runs` whose task is lost: none is queued, or
    the newest was taken by a worker REQUEUE_AFTER_S ago or more and the run has still not started (that worker
    died with it). Never twice: whichever delivery comes first claims the run (runs._pending_claim), any other
    finds it claimed and does nothing. Returns the runs queued again."""
    overdue = [execution for execution in runs if execution.status == Status.PENDING and _queued(execution)
               and _due_at(execution) + _requeue_after(execution) <= now]
    if not overdue:
        return []
    tasks = _queued_tasks(now=now)
    requeued = []
    for execution in overdue:
        key = str(execution.pk)
        if key in tasks and (tasks[key] is None or tasks[key] + _requeue_after(execution) > now):
            continue  # waiting for a worker, or taken a moment ago by one that is alive as far as we know
        try:
            execution_enqueue(execution_id=execution.pk)
        except Exception:  # noqa: BLE001 - the queue refused it: execution_enqueue ended the run failed
            logger.exception("the sweep could not queue execution %s again", execution.pk)
            continue
        logger.warning("execution %s queued again: it was still pending and no live worker holds its task",
                       execution.pk)
        requeued.append(execution)
    return requeued


def execution_overdue_count(*, now: datetime | None = None) -> int:
    """Runs the sweep should have ended, or found silent, at least one sweep interval ago (I4 says: none). /health
    reports it."""
    then = (now or timezone.now()) - timedelta(seconds=settings.CHATTER_SWEEP_INTERVAL_S)
    return sum(1 for execution in _runs_in_progress() if _sweep_reason(execution, now=then) is not None or (
        _silent(execution, now=then) and _silence_seen(execution) is None))


def execution_sweep(*, now: datetime | None = None) -> list[WorkflowExecution]:
    """The recovery sweep (docs/operations/audit.md#recovery, docs/architecture.md#i4): every run pending or running
    past its timeout (plus a grace), and every running run whose process stopped beating (its worker died: still
    silent well after a sweep found it so, _gone) after CHATTER_RESUME_ATTEMPTS re-queues, ends `failed` /
    `interrupted`; before those are used up, such a run is queued again to go on from its last checkpoint
    (execution_requeue_after_crash); one its owner asked to cancel ends `cancelled` instead, as does a pending one
    the cancel came to as it was queued again. Unanswered questions past their timeout end too
    (executions_waiting_expire). Returns the runs it ended; one that cannot be ended now is logged and left for the
    next sweep. Before that, a pending background or scheduled run whose task was lost with a dead worker is queued
    again (executions_requeue_lost), well before its timeout would end it, and the running runs it is the first to
    find silent are noted so, to be taken over by a later sweep if they stay silent (executions_silence_note)."""
    now = now or timezone.now()
    ended = []
    runs = list(_runs_in_progress())
    left = [execution for execution in runs if _sweep_reason(execution, now=now) is None]
    executions_requeue_lost(runs=left, now=now)
    executions_silence_note(runs=left, now=now)
    ended += executions_waiting_expire(now=now)  # unanswered questions past their timeout_s
    for execution in runs:
        reason = _sweep_reason(execution, now=now)
        if reason is None:
            continue
        if (execution.status == Status.RUNNING and reason.startswith(WORKER_STOPPED)
                and not execution.cancel_requested and execution.resume_attempts < settings.CHATTER_RESUME_ATTEMPTS):
            try:
                if execution_requeue_after_crash(execution_id=execution.pk, reason=reason,
                                                 silent_since=execution.silent_since) is not None:
                    logger.warning("execution %s queued again to go on from its last checkpoint: %s",
                                   execution.pk, reason)
            except Exception:  # noqa: BLE001 - e.g. the queue refused it (execution_enqueue ended it failed)
                logger.exception("the sweep could not queue execution %s again", execution.pk)
            continue
        try:
            interrupted = execution_interrupt(execution=execution, reason=reason)
        except Exception:  # noqa: BLE001 - one run that cannot be ended must not stop the sweep
            logger.exception("the sweep could not end execution %s", execution.pk)
            continue
        if interrupted is not None:
            logger.warning("execution %s interrupted: %s", execution.pk, reason)
            ended.append(interrupted)
    return ended


def events_prune(*, older_than_days: int | None = None, batch_size: int = 1000,
                 now: datetime | None = None) -> int:
    """Delete the persisted event logs of runs that finished more than `older_than_days` ago (default
    CHATTER_EVENT_RETENTION_DAYS), `batch_size` rows per transaction. A log goes whole (the runs kept have
    gapless logs, I6); running runs are never touched; totals, nodes, messages, the LLM call ledger and
    every aggregate stay as they are; their graph checkpoints go too. Returns the number of events deleted."""
    days = settings.CHATTER_EVENT_RETENTION_DAYS if older_than_days is None else older_than_days
    if days < 0 or batch_size < 1:
        raise InvalidInput("older_than_days must be >= 0 and batch_size >= 1")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    ended_before = {"execution__status__in": WorkflowExecution.TERMINAL, "execution__completed_at__lt": cutoff}
    deleted = 0
    for model in (ExecutionEvent, Checkpoint):  # its checkpoints with its log: past retention, no fork
        expired = model.objects.filter(**ended_before)
        while batch := list(expired.order_by("pk").values_list("pk", flat=True)[:batch_size]):
            with transaction.atomic():
                removed = model.objects.filter(pk__in=batch).delete()[0]
                deleted += removed if model is ExecutionEvent else 0
    return deleted
