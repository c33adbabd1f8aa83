"""Reads of workflows, always restricted to what the user may see."""
from __future__ import annotations

import uuid

from django.db.models import Prefetch, prefetch_related_objects

from workflows.models import (
    ExecutionEvent,
    LLMCall,
    WorkflowExecution,
    WorkflowSchedule,
)


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


def execution_with_trace(*, execution: WorkflowExecution) -> WorkflowExecution:
    """The execution with its node executions, tool calls and LLM calls loaded (three queries)."""
    prefetch_related_objects(
        [execution], "node_executions", "tool_call_rows",
        Prefetch("llm_call_rows", queryset=LLMCall.objects.select_related("node_execution")),
    )
    return execution


def execution_event_list(*, execution: WorkflowExecution, after: int = 0):
    """Persisted events with seq > after, in order."""
    return ExecutionEvent.objects.filter(execution=execution, seq__gt=after).order_by("seq")


def schedule_list(*, user):
    return WorkflowSchedule.objects.filter(owner=user).select_related("template", "definition")


def schedule_get(*, user, schedule_id) -> WorkflowSchedule | None:
    pk = _uuid(schedule_id)
    return None if pk is None else schedule_list(user=user).filter(pk=pk).first()
