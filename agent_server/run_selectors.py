"""Runs as the Agent Server API shows them: one or a thread's list, their values and questions, their end."""
from __future__ import annotations

from channels.db import database_sync_to_async
from django.db.models import Q

from agent_server.assistants import assistant_id_of_execution
from agent_server.messages import ai_message_of_run, input_as_dicts, question_interrupt
from agent_server.models import AgentCron, AgentRun
from agent_server.threads import graph_thread_values, owned_row, thread_get, thread_values
from core.errors import NotFound
from core.money import usd
from workflows.models import ExecutionEvent, WorkflowExecution
from workflows.realtime import execution_feed, feed_until_paused
from workflows.selectors import execution_list

Status = WorkflowExecution.Status
RUN_STATUS = {Status.PENDING: "pending", Status.RUNNING: "running", Status.COMPLETED: "success",
              Status.FAILED: "error", Status.CANCELLED: "interrupted", Status.WAITING: "interrupted"}


def run_get(*, user, run_id, thread_id=None) -> WorkflowExecution:
    """The user's run (on that thread, when one is named); another user's is a 404 like a missing one."""
    runs = execution_list(user=user).select_related("agent_run").exclude(agent_run__rolled_back=True)
    if thread_id is not None:
        runs = runs.filter(conversation_id=thread_get(user=user, thread_id=thread_id).pk)
    return owned_row(runs, run_id, what="run")


def run_list(*, user, thread_id, limit: int = 10, offset: int = 0, status: str | None = None) -> list:
    conversation = thread_get(user=user, thread_id=thread_id)
    runs = execution_list(user=user).filter(conversation_id=conversation.pk).select_related("agent_run").exclude(
        agent_run__rolled_back=True)
    if status is not None:
        wanted = [chatter for chatter, langgraph in RUN_STATUS.items() if langgraph == status]
        stopping = Q(cancel_requested=True, status__in=(Status.PENDING, Status.RUNNING))  # (_stopping)
        matching = Q(status__in=wanted) & ~stopping
        if status == "interrupted":
            matching |= stopping
        runs = runs.filter(matching)
    return list(runs.order_by("-created_at")[offset:offset + limit])


def runs_to_cancel(*, user, thread_id=None, run_ids=None, status: str | None = None) -> list[WorkflowExecution]:
    """The user's runs client.runs.cancel_many names: each of `run_ids` (on `thread_id` when given; one that is
    missing, another user's or on another thread is a 404 for all, as the stock server answers), or those in
    `status` (LangGraph's "pending", "running", or "all": both), of `thread_id` when given."""
    runs = execution_list(user=user).exclude(agent_run__rolled_back=True)
    if thread_id is not None:
        runs = runs.filter(conversation_id=thread_get(user=user, thread_id=thread_id).pk)
    if run_ids is not None:
        found = list(runs.filter(pk__in=run_ids))
        if len(found) != len(set(run_ids)):
            raise NotFound("run not found")
        return found
    wanted = {"pending": [Status.PENDING], "running": [Status.RUNNING]}.get(status, [Status.PENDING, Status.RUNNING])
    return list(runs.filter(status__in=wanted).order_by("created_at"))


def agent_run_of(execution) -> AgentRun | None:
    try:
        return execution.agent_run
    except AgentRun.DoesNotExist:
        return None


def _cron_run_of(execution) -> AgentRun | None:
    """A cron's firing (started by the schedule runner, which writes no AgentRun): its cron's assistant and
    metadata, as LangGraph gives a cron's runs (unsaved: a description, not a row). One read, for such runs only."""
    if not execution.schedule_id:
        return None
    cron = AgentCron.objects.filter(schedule_id=execution.schedule_id).first()
    if cron is None:
        return None
    return AgentRun(assistant_id=cron.assistant_id, metadata=cron.metadata,
                    multitask_strategy=AgentRun.Strategy.REJECT, stream_mode=["values"])


def _stopping(execution: WorkflowExecution) -> bool:
    """A run asked to stop that has not yet reached its next token or node boundary: `interrupted` from the cancel
    on, as the stock server marks a run it cancels (its process ends it `cancelled` when it stops)."""
    return execution.cancel_requested and execution.status in (Status.PENDING, Status.RUNNING)


def run_as_dict(execution: WorkflowExecution) -> dict:
    """A run as LangGraph's Run, with Chatter's accounting under "chatter"."""
    agent_run = agent_run_of(execution) or _cron_run_of(execution)
    status = RUN_STATUS[execution.status]
    if execution.status == Status.FAILED and execution.error_type == "timeout":
        status = "timeout"
    if _stopping(execution):
        status = "interrupted"
    return {
        "run_id": str(execution.pk),
        "thread_id": str(execution.conversation_id) if execution.conversation_id else None,
        "assistant_id": agent_run.assistant_id if agent_run else assistant_id_of_execution(execution),
        "created_at": execution.created_at,
        "updated_at": execution.completed_at or execution.started_at or execution.created_at,
        "status": status, "metadata": agent_run.metadata if agent_run else {},
        "multitask_strategy": agent_run.multitask_strategy if agent_run else "reject",
        "kwargs": {"stream_mode": agent_run.stream_mode if agent_run else ["values"]},
        "cancel_reason": "cancelled" if execution.status == Status.CANCELLED else None,
        "chatter": {
            "status": execution.status, "mode": execution.mode, "error_type": execution.error_type or None,
            "error_message": execution.error_message or None, "provider": execution.provider,
            "model": execution.model, "prompt_tokens": execution.prompt_tokens,
            "completion_tokens": execution.completion_tokens, "total_tokens": execution.total_tokens,
            "cost": usd(execution.cost), "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls,
            "execution_time_ms": execution.execution_time_ms,
        },
    }


def run_values(*, execution: WorkflowExecution, inputs: list[dict] | None = None) -> dict:
    """What /runs/wait and join answer: the thread's state as the run left it ({"messages": [...]}: its own last
    checkpoint, not what runs queued after it have written since, as LangGraph's server answers), or for a run
    without a thread its input and answer; a run that failed or was cancelled: {"__error__": …} (what a registered
    graph raised: its exception's class and text, as LangGraph's server names it); a run waiting
    for input: its thread's state with the questions it waits on under "__interrupt__", as LangGraph's (none at a
    static breakpoint)."""
    if execution.status in (Status.FAILED, Status.CANCELLED):
        return {"__error__": (execution.output_data or {}).get("raised") or {
            "error": execution.error_type or execution.status,
            "message": execution.error_message or execution.status}}
    if execution.conversation_id:
        values = thread_values(conversation_ids=[execution.conversation_id],
                               at_end_of=execution.pk)[execution.conversation_id]
    elif is_registered_run(execution):
        values = graph_thread_values(str(execution.pk)) or {}
    else:
        values = {"messages": [*input_as_dicts(inputs or []),
                               *([] if execution.status == Status.WAITING else [ai_message_of_run(execution)])]}
    interrupts = run_interrupts(execution) if execution.status == Status.WAITING else []
    if interrupts:
        values["__interrupt__"] = interrupts
    return values


def is_registered_run(execution: WorkflowExecution) -> bool:
    """Whether the run ran a registered graph as it is (its state, stream and thread are the graph's own)."""
    from engine.graph import parse_graph
    from engine.python_graphs import registered_graph_name

    return registered_graph_name(parse_graph(execution.graph)) is not None


def run_interrupts(execution: WorkflowExecution) -> list[dict]:
    """The questions a waiting run holds, as the SDK's Interrupts; a static breakpoint asks none (LangGraph's
    server answers the state alone there)."""
    return [question_interrupt(q) for q in (execution.output_data or {}).get("input_required") or []
            if "breakpoint" not in q]


@database_sync_to_async
def _events_then_paused(execution_id) -> tuple[int, bool]:
    seen = ExecutionEvent.objects.filter(execution_id=execution_id).count()
    paused = WorkflowExecution.objects.filter(pk=execution_id, status__in=(*WorkflowExecution.TERMINAL,
                                                                           Status.WAITING)).exists()
    return seen, paused


async def run_ended(*, execution_id) -> None:
    """Return once the run has ended or paused for input: its feed (the one every reader reads), from the events
    it has now, ends after its terminal event or its question. (Counted before the status is read: a run that
    pauses in between shows its question in the feed.)"""
    seen, paused = await _events_then_paused(execution_id)
    if paused:
        return
    async for _ in feed_until_paused(execution_feed(execution_id, after=seen)):
        pass
