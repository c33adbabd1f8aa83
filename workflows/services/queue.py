"""Pending runs handed to the django-q2 workers: now, or at a time (a delayed run)."""
from __future__ import annotations

import heapq
import logging
import threading
import time
from datetime import datetime

from django.db import connections
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from core.errors import RunError, Unavailable
from workflows.ending import end_from_ledger
from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status


def execution_enqueue(*, execution_id) -> None:
    """Hand a committed pending execution to the django-q2 workers. A run the queue refuses ends `failed`
    (queue_unavailable) at once rather than wait for a worker that will never come; the caller gets a 503."""
    try:
        async_task("workflows.tasks.execution_run_task", str(execution_id),
                   task_name=_task_name(execution_id), group="executions")
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the run must not stay pending
        logger.exception("execution %s could not be queued", execution_id)
        error = RunError(f"the run could not be queued: {type(exc).__name__}: {exc}", error_type="queue_unavailable")
        try:
            end_from_ledger(execution_id=execution_id, error=error, from_statuses=(Status.PENDING,))
        except Exception:  # noqa: BLE001 - the database is down too: the sweep ends it later (I4)
            logger.exception("execution %s: not queued and not ended; the sweep will end it", execution_id)
        raise Unavailable("the run could not be queued; it was recorded as failed", code="queue_unavailable",
                          details={"execution_id": str(execution_id)}) from exc


def execution_enqueue_at(*, execution_id, at: datetime) -> None:
    """Hand a committed, delayed pending execution to the workers at `at`: this process does it then (due_runs),
    and a one-off django-q2 schedule whose task is named as execution_enqueue names it (so the recovery sweep
    knows it) is the fallback should this process stop first (django-q2's scheduler looks for due schedules only
    every 30 s or so). Whichever delivery comes first claims the run (execution_run); a later one finds it claimed
    and does nothing. Cancelled meanwhile, it never starts."""
    schedule("workflows.tasks.execution_run_task", str(execution_id), name=_task_name(execution_id),
             schedule_type=Schedule.ONCE, next_run=at, repeats=1)
    due_runs.add(execution_id, at=at)


def _task_name(execution_id) -> str:
    return f"execution-{execution_id}"


def _hand_over_if_pending(execution_id: str) -> None:
    """A delayed run now due, still pending: to the workers, and its fallback schedule is no longer needed."""
    if not WorkflowExecution.objects.filter(pk=execution_id, status=Status.PENDING).exists():
        return  # cancelled (or started) meanwhile
    execution_enqueue(execution_id=execution_id)
    Schedule.objects.filter(name=_task_name(execution_id), func="workflows.tasks.execution_run_task").delete()


class _DueRuns:
    """The delayed runs this process wrote, each handed to the workers when it is due, from one thread of its own,
    which exists only while some wait."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: list[tuple[float, str]] = []  # a heap of (time.monotonic() when due, execution id)
        self._thread: threading.Thread | None = None

    def add(self, execution_id, *, at: datetime) -> None:
        due = time.monotonic() + max(0.0, (at - timezone.now()).total_seconds())
        with self._changed:
            heapq.heappush(self._due, (due, str(execution_id)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._hand_over_when_due, name="chatter-due-runs",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()

    def _hand_over_when_due(self) -> None:
        while True:
            with self._changed:
                if not self._due:
                    self._thread = None
                    return
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)  # or until an earlier one is added
                    continue
                _, execution_id = heapq.heappop(self._due)
            try:
                _hand_over_if_pending(execution_id)
            except Exception:  # noqa: BLE001 - its schedule (kept) or the recovery sweep starts it
                logger.warning("delayed execution %s could not be handed over when due", execution_id, exc_info=True)
            finally:
                connections.close_all()  # this thread's connection only; it sleeps most of the time


due_runs = _DueRuns()
