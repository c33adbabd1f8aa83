"""Pending runs handed to the django-q2 workers: now, or at a time (a delayed run)."""
from __future__ import annotations

import logging
from datetime import datetime

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
                   task_name=f"execution-{execution_id}", group="executions")
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
    """Hand a committed, delayed pending execution to django-q2 for `at`: a one-off schedule whose task (named as
    execution_enqueue names it, so the recovery sweep knows it) runs it then. Cancelled meanwhile, it never starts."""
    schedule("workflows.tasks.execution_run_task", str(execution_id), name=f"execution-{execution_id}",
             schedule_type=Schedule.ONCE, next_run=at, repeats=1)
