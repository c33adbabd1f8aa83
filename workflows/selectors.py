"""Reads of workflows, always restricted to what the user may see."""
from __future__ import annotations

import uuid

from workflows.models import WorkflowExecution, WorkflowSchedule


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def execution_list(*, user):
    return WorkflowExecution.objects.filter(owner=user).select_related("template", "definition")


def execution_get(*, user, execution_id) -> WorkflowExecution | None:
    """The user's execution, or None (another user's run is indistinguishable from a missing one)."""
    pk = _uuid(execution_id)
    if pk is None:
        return None
    return execution_list(user=user).filter(pk=pk).first()


def schedule_list(*, user):
    return WorkflowSchedule.objects.filter(owner=user).select_related("template", "definition")


def schedule_get(*, user, schedule_id) -> WorkflowSchedule | None:
    pk = _uuid(schedule_id)
    return None if pk is None else schedule_list(user=user).filter(pk=pk).first()
