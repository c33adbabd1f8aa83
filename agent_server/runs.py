"""Runs of the Agent Server API: each is a WorkflowExecution started through workflows.services.runs, run by the
same runner and recorder as every other run; a run on a thread is a chat turn in that thread's conversation."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models import F

from agent_server.assistants import assistant_id_of_execution, assistant_row, run_target
from agent_server.bodies import RunCreate
from agent_server.messages import ai_message_of_run, input_as_dicts, input_messages, turn_of
from agent_server.models import AgentRun
from agent_server.state import checkpoint_run, question_interrupt
from agent_server.threads import thread_create, thread_get, thread_values
from audit.services import audit_record
from chatter_project.errors import Conflict, InvalidInput, NotFound
from conversations.models import Conversation, Message
from conversations.selectors import RUN_IN_PROGRESS, conversation_has_run_in_progress
from conversations.services import message_delete
from workflows.engine.config import CONFIG_KEYS
from workflows.models import ExecutionEvent, WorkflowExecution
from workflows.realtime import execution_feed, feed_until_paused
from workflows.selectors import execution_list
from workflows.services.runs import (
    execution_cancel,
    execution_create,
    execution_enqueue,
    execution_run_now,
    execution_start_streamed,
    run_plan,
    run_write,
)
from workflows.services.waiting import execution_resume

Mode = WorkflowExecution.Mode
Status = WorkflowExecution.Status
RUN_STATUS = {Status.PENDING: "pending", Status.RUNNING: "running", Status.COMPLETED: "success",
              Status.FAILED: "error", Status.CANCELLED: "interrupted", Status.WAITING: "interrupted"}


@dataclass
class StartedRun:
    execution: WorkflowExecution
    thread_id: str | None
    modes: list[str]
    inputs: list[dict]  # the input's messages (a run without a thread keeps them nowhere else)
    feed: AsyncIterator[dict] | None = None


def _chatter_config(body: RunCreate, system_prompt: str | None) -> dict:
    """The run's Chatter config: the `context` (LangGraph's run-time settings) and the Chatter keys of
    `config.configurable` (other configurable keys are LangGraph's own, such as thread_id)."""
    configurable = (body.config or {}).get("configurable") or {}
    config = {key: value for key, value in configurable.items() if key in CONFIG_KEYS}
    config.update(body.context or {})
    if system_prompt is not None and "system_prompt" not in config:
        config["system_prompt"] = system_prompt
    return config


def _run_queued(*, request: dict, agent_run: dict) -> WorkflowExecution:
    """A run written pending behind its thread's run in progress: agent_server.receivers hands it to the workers
    when that one ends. Written and marked queued in one transaction. While it waits its mode is `sync` (nobody
    has queued a task for it, and the recovery sweep must not queue one: it re-queues pending background runs
    whose task is missing); it becomes a background run when it is handed to the workers."""
    plan = run_plan(**{**request, "mode": Mode.SYNC})
    with transaction.atomic():
        execution, _ = run_write(plan, status=Status.PENDING, enqueue=False)
        AgentRun.objects.create(execution=execution, queued=True, **agent_run)
        Conversation.objects.filter(pk=execution.conversation_id).update(runs_queued=F("runs_queued") + 1)
    queued_run_start_if_idle(conversation_id=execution.conversation_id)
    return execution


def queued_run_start_if_idle(*, conversation_id) -> None:
    """Hand the thread's oldest queued run to the workers when none of its other runs is in progress (called when
    a run of the thread ends, and after queueing one, in case the run it waited for ended meanwhile). One read
    when nothing is queued."""
    first = WorkflowExecution.objects.filter(conversation_id=conversation_id, status=Status.PENDING,
                                             agent_run__queued=True).order_by("created_at").first()
    if first is None:
        return
    if WorkflowExecution.objects.filter(conversation_id=conversation_id, status__in=RUN_IN_PROGRESS).exclude(
            agent_run__queued=True).exists():
        return
    with transaction.atomic():
        if not AgentRun.objects.filter(execution=first, queued=True).update(queued=False):
            return  # another process handed it over first
        Conversation.objects.filter(pk=conversation_id, runs_queued__gt=0).update(runs_queued=F("runs_queued") - 1)
        WorkflowExecution.objects.filter(pk=first.pk, status=Status.PENDING).update(mode=Mode.BACKGROUND)
        execution_id = first.pk
        transaction.on_commit(lambda: execution_enqueue(execution_id=execution_id))


def _thread_for_run(*, owner, thread_id, body: RunCreate, request: dict) -> Conversation:
    """The run's thread; with if_not_exists="create" a missing one is created, once the run is known to be valid
    (a refused run leaves no thread behind)."""
    try:
        return thread_get(user=owner, thread_id=thread_id)
    except NotFound:
        if body.if_not_exists != "create":
            raise
    try:
        chosen = uuid.UUID(str(thread_id))
    except ValueError:
        raise InvalidInput("thread_id must be a UUID") from None
    run_plan(**request)
    return thread_create(owner=owner, thread_id=chosen)


def run_start(*, owner, body: RunCreate, mode: str, thread_id=None) -> StartedRun:
    """Start a run as LangGraph's /runs (background), /runs/stream or /runs/wait do, on a thread or without one.
    On a thread, `multitask_strategy` says what happens when a run of it is in progress: `reject` (409),
    `enqueue` (this one waits its turn), `interrupt` (that one is cancelled, this one waits for it to stop)."""
    refused = body.refused()
    if refused:
        raise InvalidInput(f"not supported: {', '.join(refused)} (static breakpoints: Chatter's graphs pause at "
                           "human_input nodes and interrupt() calls; webhooks and after_seconds: not here)")
    if body.command is not None:
        return run_resume(owner=owner, body=body, mode=mode, thread_id=thread_id)
    row = assistant_row(user=owner, assistant_id=body.assistant_id)
    if body.fork_from() is not None:
        return run_fork(owner=owner, body=body, mode=mode, thread_id=thread_id, row=row)
    messages = input_messages(body.input)
    message, system_prompt = turn_of(messages)
    request = {"owner": owner, "message": message, "config": _chatter_config(body, system_prompt),
               **run_target(row)}
    agent_run = {"assistant_id": body.assistant_id, "metadata": body.metadata or {}, "stream_mode": body.stream_mode,
                 "multitask_strategy": body.multitask_strategy}
    queued = False
    if thread_id is not None:
        if not message:
            raise InvalidInput("a run on a thread needs a user message in input.messages")
        conversation = _thread_for_run(owner=owner, thread_id=thread_id, body=body, request=request)
        request.update(chat=True, conversation_id=conversation.pk)
        if conversation_has_run_in_progress(conversation_id=conversation.pk):
            if body.multitask_strategy == "reject":
                raise Conflict("Thread is already running a task. Wait for it to finish or choose a different "
                               "multitask strategy.", code="thread_busy")
            run_plan(**request)  # bad input is refused before the thread's runs are touched
            if body.multitask_strategy == "rollback":
                runs_roll_back(conversation_id=conversation.pk, actor=owner)
            elif body.multitask_strategy == "interrupt":
                for running in WorkflowExecution.objects.filter(conversation_id=conversation.pk,
                                                                status__in=RUN_IN_PROGRESS).exclude(
                        agent_run__queued=True):
                    try:
                        execution_cancel(execution=running, actor=owner)
                    except Conflict:
                        pass  # it ended meanwhile: nothing to interrupt
                queued = True
            else:
                queued = True
    started = StartedRun(execution=None, thread_id=str(thread_id) if thread_id is not None else None,
                         modes=body.stream_mode, inputs=messages)
    if queued:
        started.execution = _run_queued(request=request, agent_run=agent_run)
        if mode == Mode.STREAM:
            started.feed = execution_feed(started.execution.pk)
        return started  # waited for by the caller (run_ended) when it waits
    if mode == Mode.BACKGROUND:
        started.execution = execution_create(mode=Mode.BACKGROUND, **request)
    elif mode == Mode.STREAM:
        started.execution, started.feed = execution_start_streamed(**request)
    else:
        started.execution = execution_run_now(**request)
    AgentRun.objects.create(execution_id=started.execution.pk, **agent_run)
    return started


def run_get(*, user, run_id, thread_id=None) -> WorkflowExecution:
    """The user's run (on that thread, when one is named); another user's is a 404 like a missing one."""
    try:
        pk = uuid.UUID(str(run_id))
    except ValueError:
        raise NotFound("run not found") from None
    runs = execution_list(user=user).select_related("agent_run").exclude(agent_run__rolled_back=True)
    if thread_id is not None:
        runs = runs.filter(conversation_id=thread_get(user=user, thread_id=thread_id).pk)
    execution = runs.filter(pk=pk).first()
    if execution is None:
        raise NotFound("run not found")
    return execution


def run_list(*, user, thread_id, limit: int = 10, offset: int = 0, status: str | None = None) -> list:
    conversation = thread_get(user=user, thread_id=thread_id)
    runs = execution_list(user=user).filter(conversation_id=conversation.pk).select_related("agent_run").exclude(
        agent_run__rolled_back=True)
    if status is not None:
        wanted = [chatter for chatter, langgraph in RUN_STATUS.items() if langgraph == status]
        runs = runs.filter(status__in=wanted)
    return list(runs.order_by("-created_at")[offset:offset + limit])


def agent_run_of(execution) -> AgentRun | None:
    try:
        return execution.agent_run
    except AgentRun.DoesNotExist:
        return None


def run_as_dict(execution: WorkflowExecution) -> dict:
    """A run as LangGraph's Run, with Chatter's accounting under "chatter"."""
    agent_run = agent_run_of(execution)
    status = RUN_STATUS[execution.status]
    if execution.status == Status.FAILED and execution.error_type == "timeout":
        status = "timeout"
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
            "cost": str(execution.cost), "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls,
            "execution_time_ms": execution.execution_time_ms,
        },
    }


def run_values(*, execution: WorkflowExecution, inputs: list[dict] | None = None) -> dict:
    """What /runs/wait and join answer: the thread's state after the run ({"messages": [...]}), or for a run
    without a thread its input and answer; a run that failed or was cancelled: {"__error__": …}; a run waiting
    for input: its thread's state with the questions it waits on under "__interrupt__", as LangGraph's."""
    if execution.status in (Status.FAILED, Status.CANCELLED):
        return {"__error__": {"error": execution.error_type or execution.status,
                              "message": execution.error_message or execution.status}}
    if execution.conversation_id:
        values = thread_values(conversation_ids=[execution.conversation_id])[execution.conversation_id]
    else:
        values = {"messages": [*input_as_dicts(inputs or []),
                               *([] if execution.status == Status.WAITING else [ai_message_of_run(execution)])]}
    if execution.status == Status.WAITING:
        values["__interrupt__"] = run_interrupts(execution)
    return values


def run_interrupts(execution: WorkflowExecution) -> list[dict]:
    """The questions a waiting run holds, as the SDK's Interrupts."""
    return [question_interrupt(q) for q in (execution.output_data or {}).get("input_required") or []]


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


def _waiting_run(*, owner, thread_id) -> WorkflowExecution:
    if thread_id is None:
        raise InvalidInput("command.resume needs a thread: it answers the thread's run waiting for input")
    conversation = thread_get(user=owner, thread_id=thread_id)
    execution = WorkflowExecution.objects.select_related("template", "owner").filter(
        conversation_id=conversation.pk, status=Status.WAITING).order_by("-created_at").first()
    if execution is None:
        raise Conflict("no run of this thread is waiting for input", code="not_waiting")
    return execution


def run_resume(*, owner, body: RunCreate, mode: str, thread_id) -> StartedRun:
    """`command={"resume": …}`: the thread's waiting run goes on with the answer through the one resume path
    (workflows.services.waiting: checked against its question's schema, claimed, run from its checkpoint by the
    same runner, accounted on the same run). The run that goes on IS the waiting run: its id is the one the
    interrupted run had. `resume` answers the one question, or several by interrupt id ({id: answer})."""
    unknown = sorted(set(body.command) - {"resume"})
    if unknown or "resume" not in body.command:
        raise InvalidInput(f"only command.resume is supported (not {unknown or ['an empty command']}): Chatter's "
                           "graphs are run from their own edges")
    execution = _waiting_run(owner=owner, thread_id=thread_id)
    resume = body.command["resume"]
    asked = {q["interrupt_id"] for q in (execution.output_data or {}).get("input_required") or []}
    by_id = isinstance(resume, dict) and resume and set(resume) <= asked
    answer = {"answers": resume} if by_id else {"answer": resume}
    started = StartedRun(execution=execution, thread_id=str(execution.conversation_id), modes=body.stream_mode,
                         inputs=[])
    outcome = execution_resume(execution=execution, actor=owner, mode=mode, **answer)
    if mode == Mode.STREAM:
        started.feed = outcome
    else:
        started.execution = outcome
    AgentRun.objects.update_or_create(execution_id=execution.pk, defaults={"stream_mode": body.stream_mode},
                                      create_defaults={"assistant_id": body.assistant_id,
                                                       "metadata": body.metadata or {}, "stream_mode": body.stream_mode,
                                                       "multitask_strategy": body.multitask_strategy})
    return started


def run_fork(*, owner, body: RunCreate, mode: str, thread_id, row) -> StartedRun:
    """`checkpoint_id` (or `checkpoint`): a new run of that checkpoint's graph going on from it (issue 13's fork,
    workflows.services.runs.fork_plan). On a thread, the checkpoint must be one of the thread's; the fork, like
    every fork, runs outside the conversation (which stays as it was) with accounting of its own."""
    checkpoint_id = body.fork_from()
    if thread_id is not None:
        checkpoint_run(conversation=thread_get(user=owner, thread_id=thread_id), checkpoint_id=checkpoint_id)
    request = {"owner": owner, "from_checkpoint": checkpoint_id}
    started = StartedRun(execution=None, thread_id=None, modes=body.stream_mode, inputs=[])
    if mode == Mode.BACKGROUND:
        started.execution = execution_create(mode=Mode.BACKGROUND, **request)
    elif mode == Mode.STREAM:
        started.execution, started.feed = execution_start_streamed(**request)
    else:
        started.execution = execution_run_now(**request)
    AgentRun.objects.create(execution_id=started.execution.pk, assistant_id=body.assistant_id,
                            metadata=body.metadata or {}, stream_mode=body.stream_mode,
                            multitask_strategy=body.multitask_strategy)
    return started


CANCEL_WAIT_S = 30.0


def runs_roll_back(*, conversation_id, actor) -> None:
    """multitask_strategy="rollback": the thread's runs in progress are cancelled, and once ended, rolled back:
    their messages leave the thread through conversations' message_delete (the one path: the conversation's totals
    and the usage rollups' message counts follow through its receivers), and the runs leave the thread's runs and
    history. What they spent stays on the books: a run's LLM calls, tokens and cost were spent at the provider,
    so the run row, its calls, the template's analytics and the budgets keep them ("nothing is lost"), and an
    `execution.rolled_back` audit event says what was taken out of the thread. Waits (up to CANCEL_WAIT_S) for a
    running run to stop at its next token or node boundary; one that does not is a 409 and nothing is rolled
    back."""
    running = list(WorkflowExecution.objects.filter(conversation_id=conversation_id, status__in=RUN_IN_PROGRESS))
    for execution in running:
        try:
            execution_cancel(execution=execution, actor=actor)
        except Conflict:
            pass  # it ended meanwhile: rolled back all the same
    ids = [execution.pk for execution in running]
    deadline = time.monotonic() + CANCEL_WAIT_S
    while WorkflowExecution.objects.filter(pk__in=ids, status__in=RUN_IN_PROGRESS).exists():
        if time.monotonic() > deadline:
            raise Conflict("the run to roll back did not stop in time; try again", code="thread_busy")
        time.sleep(0.05)
    for execution in WorkflowExecution.objects.filter(pk__in=ids).select_related("template"):
        run_roll_back(execution=execution, actor=actor)


def run_roll_back(*, execution: WorkflowExecution, actor) -> None:
    """Take one ended run out of its thread (see runs_roll_back): its messages, then its place in the thread."""
    with transaction.atomic():
        messages = list(Message.objects.filter(execution_id=execution.pk).values(
            "pk", "role", "total_tokens", "cost"))
        for message in messages:
            message_delete(message_id=message["pk"], actor=actor)
        AgentRun.objects.update_or_create(execution_id=execution.pk, defaults={"rolled_back": True, "queued": False},
                                          create_defaults={"assistant_id": assistant_id_of_execution(execution) or "",
                                                           "rolled_back": True})
        audit_record(action="execution.rolled_back", actor=actor, target=execution,
                     correlation_id=execution.correlation_id, data={
                         "conversation_id": str(execution.conversation_id), "status": execution.status,
                         "messages_removed": [{"id": str(m["pk"]), "role": m["role"],
                                               "total_tokens": m["total_tokens"], "cost": str(m["cost"])}
                                              for m in messages],
                         "kept_on_the_run": {"total_tokens": execution.total_tokens, "cost": str(execution.cost),
                                             "llm_calls": execution.llm_calls}})


def run_cancel(*, execution: WorkflowExecution, actor) -> WorkflowExecution:
    return execution_cancel(execution=execution, actor=actor)


def run_cancel_if_in_progress(*, execution_id, actor) -> None:
    """on_disconnect="cancel": the stream's client is gone; its run, if still going, is cancelled."""
    execution = WorkflowExecution.objects.filter(pk=execution_id, status__in=RUN_IN_PROGRESS).first()
    if execution is not None:
        try:
            execution_cancel(execution=execution, actor=actor)
        except Conflict:
            pass  # it ended meanwhile


def thread_of(execution) -> Conversation | None:
    return execution.conversation if execution.conversation_id else None
