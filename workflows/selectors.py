"""Reads of workflows, always restricted to what the user may see."""
from __future__ import annotations

import uuid

from django.db.models import Prefetch, Q, prefetch_related_objects

from core.cache import hot_reads

from workflows.models import (
    RUN_IN_PROGRESS,
    ExecutionEvent,
    LLMCall,
    ProviderAttempt,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def template_list(*, user):
    """Built-ins, public templates and the user's own."""
    return WorkflowTemplate.objects.filter(Q(is_builtin=True) | Q(is_public=True) | Q(owner=user))


def template_get(*, user, key_or_id) -> WorkflowTemplate | None:
    """By id, or by key: the user's own template with that key, else the built-in or public one (keys are unique
    per owner and among shared templates, so at most one of each). What template_list(user=user) would find.

    Every run names its template and templates hardly ever change: a hot read (core.cache.hot_reads, renewed when
    any template is written), so a run reads it from the process's memo, each its own instance, where the cache is
    shared (the queryset 1.3-1.9 ms of CPU a run, the memo 0.24-0.30, loaded; bench/RESULTS.md, "Issue 48, items 2
    and 3")."""
    return hot_reads.get(("template", user.pk, str(key_or_id)),
                         lambda: _template_visible(user=user, key_or_id=key_or_id))


def _template_visible(*, user, key_or_id) -> WorkflowTemplate | None:
    """template_get's read: one statement."""
    pk = _uuid(key_or_id)
    visible = template_list(user=user)
    if pk is not None:
        return next(iter(visible.filter(pk=pk)[:1]), None)
    found = list(visible.filter(key=str(key_or_id))[:2])  # at most the user's own and a shared one
    return next((template for template in found if template.owner_id == user.pk), found[0] if found else None)


def definition_list(*, user):
    """The user's definitions and everyone's public ones."""
    return WorkflowDefinition.objects.filter(Q(owner=user) | Q(is_public=True)).select_related("template")


def definition_get(*, user, definition_id) -> WorkflowDefinition | None:
    pk = _uuid(definition_id)
    return None if pk is None else definition_list(user=user).filter(pk=pk).first()


def execution_list(*, user):
    return WorkflowExecution.objects.filter(owner=user).select_related("template", "definition")


def execution_get(*, user, execution_id) -> WorkflowExecution | None:
    """The user's execution, or None (another user's run is indistinguishable from a missing one)."""
    pk = _uuid(execution_id)
    if pk is None:
        return None
    return execution_list(user=user).filter(pk=pk).first()


def execution_with_trace(*, execution: WorkflowExecution) -> WorkflowExecution:
    """The execution with its node executions, tool calls, LLM calls and provider attempts loaded (four queries)."""
    prefetch_related_objects(
        [execution], "node_executions", "tool_call_rows",
        Prefetch("llm_call_rows", queryset=LLMCall.objects.select_related("node_execution")),
        Prefetch("provider_attempts", queryset=ProviderAttempt.objects.select_related("node_execution")),
    )
    return execution


def execution_event_list(*, execution: WorkflowExecution, after: int = 0):
    """Persisted events with seq > after, in order."""
    return ExecutionEvent.objects.filter(execution=execution, seq__gt=after).order_by("seq")


def conversation_has_run_in_progress(*, conversation_id) -> bool:
    """Whether a run of the conversation is pending, running or waiting: it will still save its reply there."""
    return WorkflowExecution.objects.filter(conversation_id=conversation_id, status__in=RUN_IN_PROGRESS).exists()


def schedule_list(*, user):
    return WorkflowSchedule.objects.filter(owner=user).select_related("template", "definition")


# The figures of an LLM call that its run's ending reports per (provider, model) (execution_finished).
CALL_FIGURES = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens", "reasoning_tokens",
                "cost")


def execution_checkpoint_list(*, execution: WorkflowExecution) -> list[dict]:
    """A visible run's graph checkpoints, oldest first (workflows.checkpointer.checkpoint_summaries)."""
    from workflows.checkpointer import checkpoint_summaries  # loads LangGraph: not for every importer of selectors

    return checkpoint_summaries(execution_ids=[execution.pk])


def conversation_checkpoint_list(*, user, conversation_id) -> list[dict] | None:
    """The checkpoints of every run of one of the user's conversations, oldest first; None: not theirs."""
    from conversations.models import Conversation
    from workflows.checkpointer import checkpoint_summaries

    if not Conversation.objects.filter(pk=_uuid(conversation_id), owner=user).exists():
        return None
    runs = WorkflowExecution.objects.filter(conversation_id=conversation_id, owner=user).values_list("pk", flat=True)
    return checkpoint_summaries(execution_ids=list(runs))
