"""Runs of the Agent Server API: each is a WorkflowExecution started through workflows.services.runs (or answered
through workflows.services.waiting), run by the same runner and recorder as every other run; a run on a thread is
a chat turn in that thread's conversation."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import AsyncIterator

from django.db import transaction
from django.db.models import F

from agent_server.assistants import (
    RegisteredGraph,
    assistant_config,
    assistant_of,
    assistant_row,
    config_layer,
    graph_of,
    run_target,
)
from agent_server.bodies import RunCreate
from agent_server.messages import input_messages, turn_of
from agent_server.models import AgentRun, Assistant
from agent_server.resume import fork_request, run_resume, unwaited_answers
from agent_server.rollback import run_roll_back, run_unqueue, runs_roll_back, runs_stop
from agent_server.state import thread_questions_unwaited
from agent_server.stream import graph_streams_asked
from agent_server.threads import (
    thread_create,
    thread_get,
    thread_stopped,
    thread_update,
)
from conversations.models import Conversation
from core.db import retried_on_conflict
from core.errors import Conflict, InvalidInput, NotFound
from engine.config import CONFIG_KEYS
from workflows.models import RUN_IN_PROGRESS, WorkflowExecution
from workflows.realtime import execution_feed, feed_until_paused
from workflows.selectors import conversation_has_run_in_progress
from workflows.services.queue import execution_enqueue
from workflows.services.run_requests import AgentRunRequest
from workflows.services.runs import (
    execution_cancel,
    execution_create,
    execution_run_now,
    execution_start_streamed,
    run_plan,
    run_write,
    waiting_run_input_set,
)

Mode = WorkflowExecution.Mode
Status = WorkflowExecution.Status


@dataclass
class StartedRun:
    execution: WorkflowExecution
    thread_id: str | None
    modes: list[str]
    inputs: list[dict]  # the input's messages (a run without a thread keeps them nowhere else)
    feed: AsyncIterator[dict] | None = None


def chatter_config(body, system_prompt: str | None, *, assistant: dict | None = None) -> dict:
    """The run's Chatter config: its `context` and `config.configurable` (agent_server.assistants.config_layer), the
    input's system message as the system prompt unless they name one, all over the `assistant`'s own layer
    (assistant_config)."""
    config = config_layer(config=body.config, context=body.context)
    if system_prompt is not None and "system_prompt" not in config:
        config["system_prompt"] = system_prompt
    return {**(assistant or {}), **config}


_LANGGRAPH_CONFIGURABLE = ("thread_id", "checkpoint_id", "checkpoint_ns", "run_id", "assistant_id", "graph_id")


def _config_layers(body, *, assistant=None) -> list[tuple]:
    """(config, context) a run takes, the first under the next: a user's assistant's version's, then the run's."""
    layers = [(assistant.current.config, assistant.current.context)] if isinstance(assistant, Assistant) else []
    return [*layers, (body.config, body.context)]


def recursion_limit_asked(body, *, assistant=None) -> dict:
    """{"recursion_limit": n} when the run's config (or its assistant's, under it) names one, else {}."""
    limit = None
    for config, _ in _config_layers(body, assistant=assistant):
        limit = (config or {}).get("recursion_limit", limit)
    return {"recursion_limit": limit} if limit is not None else {}


def graph_request(body, *, assistant=None) -> dict:
    """A registered graph's run as asked: its input as given, the configurable keys and context it runs with
    (Chatter's own config keys and LangGraph's thread keys apart; a user's assistant's version's under the run's),
    its static breakpoints and its recursion_limit."""
    configurable, context = {}, None
    for config, given in _config_layers(body, assistant=assistant):
        configurable.update({key: value for key, value in ((config or {}).get("configurable") or {}).items()
                             if key not in CONFIG_KEYS and key not in _LANGGRAPH_CONFIGURABLE})
        if given is not None:  # an empty context is a context (a context_schema graph gets its defaults)
            context = {**(context or {}), **given}
    return {"graph_input": body.input, "configurable": configurable, "context": context,
            "interrupt_before": body.interrupt_before, "interrupt_after": body.interrupt_after,
            **recursion_limit_asked(body, assistant=assistant)}


def _branch_from(*, owner, body: RunCreate, thread_id) -> dict:
    """A run from one of its thread's checkpoints (`checkpoint_id`: regenerate, edit, time travel) goes on from
    there in the same thread, as LangGraph forks: a new branch whose parent is that checkpoint. A checkpoint the
    thread does not have is a 404."""
    checkpoint_id = body.fork_from()
    if checkpoint_id is None:
        return {}
    if thread_id is None:
        raise InvalidInput("checkpoint_id names a checkpoint of a thread: give the thread")
    if not _thread_has_checkpoint(owner=owner, thread_id=thread_id, checkpoint_id=checkpoint_id):
        raise NotFound("checkpoint not found in this thread")
    return {"checkpoint_id": str(checkpoint_id)}


def _thread_has_checkpoint(*, owner, thread_id, checkpoint_id) -> bool:
    """Whether the checkpoint is one of the thread's own state's (saved under its id), not of a run's own thread
    (a run from before threads kept their graph's state)."""
    from workflows.checkpointer import checkpointer

    conversation = thread_get(user=owner, thread_id=thread_id)
    return checkpointer.get_tuple({"configurable": {"thread_id": str(conversation.pk), "checkpoint_ns": "",
                                                    "checkpoint_id": str(checkpoint_id)}}) is not None


def _run_queued(*, request: AgentRunRequest, agent_run: dict, graph_id: str | None = None) -> WorkflowExecution:
    """A run written pending behind its thread's run in progress: agent_server.receivers hands it to the workers
    when that one ends. Written and marked queued in one transaction. While it waits its mode is `sync` (nobody
    has queued a task for it, and the recovery sweep must not queue one: it re-queues pending background runs
    whose task is missing); it becomes a background run when it is handed to the workers."""
    plan = run_plan(replace(request, on_written=None), mode=Mode.SYNC)
    execution = _run_queued_write(plan=plan, agent_run=agent_run, graph_id=graph_id)
    queued_run_start_if_idle(conversation_id=execution.conversation_id)
    return execution


@retried_on_conflict
def _run_queued_write(*, plan, agent_run: dict, graph_id: str | None = None) -> WorkflowExecution:
    with transaction.atomic():
        execution, _ = run_write(plan, status=Status.PENDING, enqueue=False)
        AgentRun.objects.create(execution=execution, queued=True, **agent_run)
        if graph_id:
            _thread_stamp(execution.conversation_id, assistant_id=agent_run["assistant_id"], graph_id=graph_id)
        Conversation.objects.filter(pk=execution.conversation_id).update(runs_queued=F("runs_queued") + 1)
    return execution


@retried_on_conflict
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
        # The run's row before its thread's: the one lock order (docs/architecture.md#the-lock-order).
        WorkflowExecution.objects.filter(pk=first.pk, status=Status.PENDING).update(mode=Mode.BACKGROUND)
        Conversation.objects.filter(pk=conversation_id, runs_queued__gt=0).update(runs_queued=F("runs_queued") - 1)
        execution_id = first.pk
        transaction.on_commit(lambda: execution_enqueue(execution_id=execution_id))


def _thread_for_run(*, owner, thread_id, body: RunCreate, request: AgentRunRequest) -> Conversation:
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
    run_plan(request)
    return thread_create(owner=owner, thread_id=chosen)


def run_start(*, owner, body: RunCreate, mode: str, thread_id=None, api_key=None,
              streaming: str = "classic") -> StartedRun:
    """Start a run as LangGraph's /runs (background), /runs/stream or /runs/wait do, on a thread or without one.
    On a thread, `multitask_strategy` says what happens when a run of it is in progress (or waiting for input):
    `reject` (409), `enqueue` (this one waits its turn), `interrupt` (that one and any queued behind it are
    cancelled, this one waits for it to stop), `rollback` (that one is cancelled and taken out of the thread, then this one starts). With
    `command.resume` the thread's waiting run goes on instead (run_resume); with `checkpoint_id` of the thread's
    state the run goes on from it, a branch of the thread (of a run's own state, from before threads kept their
    graph's: a fork outside the conversation, fork_request). `streaming`: "v3" for a run the thread protocol starts
    (agent_server.protocol: a registered graph's run keeps LangGraph's protocol stream). Without a thread,
    `on_completion="keep"` runs it on a new thread of its own, which stays."""
    if thread_id is None and body.on_completion == "keep" and body.command is None:
        thread_id = uuid.uuid4()  # made with the run, once the run is known to be valid (_thread_for_run)
        body = body.model_copy(update={"if_not_exists": "create"})
    if body.command is not None and set(body.command) == {"resume"} and thread_id is not None and thread_stopped(
            conversation=thread_get(user=owner, thread_id=thread_id)):
        # A registered graph's thread at a static breakpoint (its run ended there): a new run goes on from it, as
        # LangGraph's server runs Command(resume=…) there (no interrupt asked: the value is not used).
        body = body.model_copy(update={"command": None, "input": None})
    answering = None
    questions = thread_questions_unwaited(conversation=thread_get(user=owner, thread_id=thread_id)) if (
        body.command is not None and set(body.command) == {"resume"} and thread_id is not None) else []
    if questions:
        # Its waiting run was cancelled, the questions stay in its graph's state: a new run answers them from there,
        # as LangGraph's server runs Command(resume=…) on a thread whose run ended at its interrupt(). The answer is
        # checked as a waiting run's is; a template's graph takes it by interrupt id, a registered graph as given.
        answers = unwaited_answers(resume=body.command["resume"], questions=questions)
        answering = {"resume": body.command["resume"], "answers": answers}
        body = body.model_copy(update={"command": None, "input": None})
    row = assistant_row(user=owner, assistant_id=body.assistant_id) if body.command is None else None
    registered = row is not None and isinstance(graph_of(row), RegisteredGraph)
    refused = body.refused() if not registered and thread_id is None else []
    if refused:
        raise InvalidInput(f"not supported without a thread: {', '.join(refused)} (a Chatter graph's run keeps its "
                           "checkpoints on its thread)")
    if body.command is None and body.input is None and thread_id is not None and not registered and (
            body.fork_from() is None and _breakpoint_go_on(owner=owner, thread_id=thread_id, body=body, row=row)):
        body = body.model_copy(update={"command": {"resume": None}})  # goes on from it, as LangGraph's server does
    if body.command is not None:
        execution, feed = run_resume(owner=owner, body=body, mode=mode, thread_id=thread_id)
        return StartedRun(execution=execution, thread_id=str(execution.conversation_id), modes=body.stream_mode,
                          inputs=[], feed=feed)
    agent_run = {"assistant_id": body.assistant_id, "metadata": body.metadata or {}, "stream_mode": body.stream_mode,
                 "multitask_strategy": body.multitask_strategy}
    # Written with the run (before it can end: its webhook's payload reads it); a queued run writes its own.
    graph_id = assistant_of(row)["graph_id"] if row is not None else None

    def on_written(execution: WorkflowExecution) -> None:
        AgentRun.objects.create(execution_id=execution.pk, **agent_run)
        if execution.conversation_id and graph_id:
            _thread_stamp(execution.conversation_id, assistant_id=body.assistant_id, graph_id=graph_id)

    written = {"on_written": on_written,
               "api_key": api_key,  # the key's budgets bind the run, and analytics count it under the key
               **({"webhook": body.webhook} if body.webhook else {})}  # webhook: agent_server.webhooks
    branches = body.fork_from() is not None and (registered or thread_id is not None and _thread_has_checkpoint(
        owner=owner, thread_id=thread_id, checkpoint_id=body.fork_from()))
    if body.fork_from() is not None and not branches:  # (a thread's own checkpoint: a branch of it, below)
        started = StartedRun(execution=None, thread_id=None, modes=body.stream_mode, inputs=[])
        return _run_now(started, request=AgentRunRequest(**fork_request(owner=owner, body=body, thread_id=thread_id),
                                                         **written), body=body, mode=mode)
    if registered:  # the graph's own input, whatever its schema
        messages, message = [], None
        chatter_keys = {key: value for key, value in ((body.config or {}).get("configurable") or {}).items()
                        if key in CONFIG_KEYS}  # its context is the graph's own, not Chatter's run config
        request = AgentRunRequest(
            owner=owner, config=chatter_keys,
            graph_request={**graph_request(body, assistant=row), "streaming": streaming,
                           # the graph's checkpoints go to the run's log only when a stream shows them
                           "stream_checkpoints": bool({"checkpoints", "debug"} & set(body.stream_mode)),
                           "graph_streams": graph_streams_asked(body.stream_mode),
                           "stream_subgraphs": body.stream_subgraphs,  # its subgraphs' values and tasks too
                           **({"command": {"resume": answering["resume"]}} if answering is not None else {}),
                           **_branch_from(owner=owner, body=body, thread_id=thread_id)},
            **run_target(row), **written)
    else:
        messages = input_messages(body.input)
        message, system_prompt = turn_of(messages)
        # on a thread, the thread keeps the graph's state, as a registered graph's does
        on_thread = {"on_thread": True, **({"checkpoint_id": str(body.fork_from())} if branches else {}),
                     **({"command": {"resume": answering["answers"]}} if answering is not None else {}),
                     **_json_graph_stops(body, row)} if thread_id is not None else {}
        request = AgentRunRequest(
            owner=owner, message=message, config=chatter_config(body, system_prompt, assistant=assistant_config(row)),
            graph_request={**on_thread, **recursion_limit_asked(body, assistant=row)} or None,
            **run_target(row), **written)
    started = StartedRun(execution=None, thread_id=str(thread_id) if thread_id is not None else None,
                         modes=body.stream_mode, inputs=messages)
    if thread_id is None:
        return _run_now(started, request=request, body=body, mode=mode)
    if not message and not registered and not branches and answering is None:
        # (from a checkpoint it goes on as it is, e.g. regenerate; answering a question, from it)
        raise InvalidInput("a run on a thread needs a user message in input.messages")
    conversation = _thread_for_run(owner=owner, thread_id=thread_id, body=body, request=request)
    request = replace(request, chat=not registered and bool(message), conversation_id=conversation.pk)
    if not conversation_has_run_in_progress(conversation_id=conversation.pk):
        try:
            return _run_now(started, request=replace(request, on_written=_alone_on_thread(request.on_written)),
                            body=body, mode=mode)
        except ThreadBusy:
            pass  # another run of the thread was written meanwhile: this one meets a busy thread after all
    if _busy_thread(conversation_id=conversation.pk, owner=owner, body=body, request=request):
        started.execution = _run_queued(request=request, agent_run=agent_run, graph_id=graph_id)
        if mode == Mode.STREAM:
            started.feed = feed_until_paused(execution_feed(started.execution.pk))
        return started  # waited for by the caller (run_ended) when it waits
    return _run_now(started, request=request, body=body, mode=mode)


def _json_graph_stops(body: RunCreate, row) -> dict:
    """A Chatter graph's run on a thread: its static breakpoints (node ids of its graph, or "*") and whether the
    checkpoints it saves go to its stream; a node the graph does not have is a 422."""
    from engine.graph import parse_graph

    stops = {"stream_checkpoints": True} if {"checkpoints", "debug"} & set(body.stream_mode) else {}
    asked = [name for name in ("interrupt_before", "interrupt_after") if getattr(body, name) not in (None, [], {})]
    nodes = {node.id for node in parse_graph(graph_of(row).graph).nodes} if asked else set()
    for name in asked:
        value = getattr(body, name)
        if value != "*" and (not isinstance(value, list) or not all(isinstance(node, str) for node in value)):
            raise InvalidInput(f"{name} is \"*\" or a list of the graph's node ids")
        unknown = sorted(set(value) - nodes) if value != "*" else []
        if unknown:
            raise InvalidInput(f"{name} names nodes the graph does not have: {unknown} (its nodes: {sorted(nodes)})")
        stops[name] = value
    return stops


def _breakpoint_go_on(*, owner, thread_id, body: RunCreate, row) -> bool:
    """Whether the thread's run waits at a static breakpoint; if so it goes on with this request's breakpoints and
    stream (a new run of LangGraph's server has its own), written on it before it is claimed."""
    conversation = thread_get(user=owner, thread_id=thread_id)
    waiting = WorkflowExecution.objects.filter(conversation_id=conversation.pk, status=Status.WAITING).only(
        "pk", "input_data", "output_data").first()
    if waiting is None or not any("breakpoint" in question for question in (
            waiting.output_data or {}).get("input_required") or []):
        return False
    kept = {key: value for key, value in waiting.input_data.items()
            if key not in ("interrupt_before", "interrupt_after", "stream_checkpoints")}
    return waiting_run_input_set(execution_id=waiting.pk, input_data={**kept, **_json_graph_stops(body, row)})


def _thread_stamp(conversation_id, *, assistant_id: str, graph_id: str) -> None:
    """A thread names the graph and assistant it runs in its metadata, as LangGraph's server stamps it (clients
    list a graph's threads by them); once, by its first run, written with that run (a refused run leaves the
    thread as it was)."""
    conversation = Conversation.objects.get(pk=conversation_id)
    metadata = conversation.metadata or {}
    if "graph_id" not in metadata or "assistant_id" not in metadata:
        thread_update(conversation=conversation, metadata={"graph_id": graph_id, "assistant_id": assistant_id,
                                                           **metadata})


def runs_start_batch(*, owner, bodies: list, api_key=None) -> list[WorkflowExecution]:
    """client.runs.create_batch: each a background run (on its thread when it names one), all written in one
    transaction: one refused (bad input, a 404, a 409, a limit) writes none, and none is handed to a worker
    before all are written."""
    with transaction.atomic():
        return [run_start(owner=owner, body=body, mode=Mode.BACKGROUND, thread_id=body.thread_id,
                          api_key=api_key).execution for body in bodies]


class ThreadBusy(Conflict):
    """Another run of the thread was written between the check and this run's insert."""


def _alone_on_thread(on_written):
    """`on_written` after a check, in the run's creating transaction, that no other run of its thread is in
    progress. That transaction locked the conversation's row first (workflows.services.runs.run_write: by the turn's
    user message, or by a locking read for a run that writes none, a registered graph's; on SQLite the write
    transaction is the database's one writer): two runs of one thread cannot both pass it."""
    def written(execution: WorkflowExecution) -> None:
        if WorkflowExecution.objects.filter(conversation_id=execution.conversation_id,
                                            status__in=RUN_IN_PROGRESS).exclude(pk=execution.pk).exists():
            raise ThreadBusy("the thread began another run meanwhile", code="thread_busy")
        on_written(execution)
    return written


def _busy_thread(*, conversation_id, owner, body: RunCreate, request: AgentRunRequest) -> bool:
    """What `multitask_strategy` does on a busy thread: whether the new run is queued behind the one in progress
    (`enqueue`, `interrupt`) or starts now (`rollback`, once that one left the thread); `reject`, or `enqueue`
    behind a run that waits for input only: a 409."""
    if body.multitask_strategy == "reject":
        raise Conflict("Thread is already running a task. Wait for it to finish or choose a different "
                       "multitask strategy.", code="thread_busy")
    if body.multitask_strategy == "enqueue" and not WorkflowExecution.objects.filter(
            conversation_id=conversation_id, status__in=(Status.PENDING, Status.RUNNING)).exists():
        # Its run waits for a person, not for a worker: queued behind it, this one would wait with no end in sight.
        raise Conflict("The thread's run waits for input: answer it (command.resume), or start this run with "
                       "multitask_strategy interrupt or rollback.", code="thread_busy")
    if body.after_seconds:
        raise InvalidInput("after_seconds is not supported on a busy thread: the run would wait for it anyway")
    run_plan(request)  # bad input is refused before the thread's runs are touched
    if body.multitask_strategy == "rollback":
        runs_roll_back(conversation_id=conversation_id, actor=owner)  # then this one starts now
        return False
    if body.multitask_strategy == "interrupt":  # as the stock server: every run of the thread, queued ones too
        for running in WorkflowExecution.objects.filter(conversation_id=conversation_id,
                                                        status__in=RUN_IN_PROGRESS).order_by("created_at"):
            try:
                execution_cancel(execution=running, actor=owner)
            except Conflict:
                pass  # it ended meanwhile: nothing to interrupt
            run_unqueue(execution=running)
    return True


def _run_now(started: StartedRun, *, request: AgentRunRequest, body: RunCreate, mode: str) -> StartedRun:
    if body.after_seconds:  # a delayed run: pending until then, started by django-q2; stream and wait follow it
        started.execution = execution_create(replace(request, mode=Mode.BACKGROUND, after_seconds=body.after_seconds))
        if mode == Mode.STREAM:
            started.feed = execution_feed(started.execution.pk)
    elif mode == Mode.BACKGROUND:
        started.execution = execution_create(replace(request, mode=Mode.BACKGROUND))
    elif mode == Mode.STREAM:
        started.execution, started.feed = execution_start_streamed(request)
    else:
        started.execution = execution_run_now(request)
    return started


def run_cancel(*, execution: WorkflowExecution, actor) -> WorkflowExecution:
    """Ask the run to stop; one queued behind its thread's run in progress waits no more (run_unqueue)."""
    cancelled = execution_cancel(execution=execution, actor=actor)
    run_unqueue(execution=execution)
    return cancelled


def run_cancel_and_roll_back(*, execution: WorkflowExecution, actor) -> WorkflowExecution:
    """cancel(action="rollback"): the run is stopped (runs_stop), then taken out of its thread (run_roll_back):
    gone from the thread's runs, as the stock server deletes it; what it spent stays on its row. A run that has
    ended is a 409, as any cancel of one."""
    if execution.is_terminal:
        raise Conflict(f"the run is already {execution.status}", code="not_cancellable")
    runs_stop(execution_ids=[execution.pk], actor=actor)
    execution.refresh_from_db()
    if execution.conversation_id:
        run_roll_back(execution=execution, actor=actor)
    return execution


def runs_cancel(*, executions: list[WorkflowExecution], action: str, actor) -> None:
    """client.runs.cancel_many: each run still in progress is cancelled as one run's cancel cancels it (a queued
    one leaves its thread's queue); with action="rollback", once all have stopped, each is taken out of its thread.
    A run that has ended is left as it is (the stock server passes over it)."""
    in_progress = [execution for execution in executions if not execution.is_terminal]
    if action == "rollback":
        runs_stop(execution_ids=[execution.pk for execution in in_progress], actor=actor)
        for execution in WorkflowExecution.objects.filter(pk__in=[e.pk for e in in_progress]).select_related(
                "template"):
            if execution.conversation_id:
                run_roll_back(execution=execution, actor=actor)
        return
    for execution in in_progress:
        try:
            execution_cancel(execution=execution, actor=actor)
        except Conflict:
            continue  # it ended meanwhile
        run_unqueue(execution=execution)


def run_cancel_if_in_progress(*, execution_id, actor) -> None:
    """on_disconnect="cancel": the stream's client is gone; its run, if still going, is cancelled."""
    execution = WorkflowExecution.objects.filter(pk=execution_id, status__in=RUN_IN_PROGRESS).first()
    if execution is not None:
        try:
            execution_cancel(execution=execution, actor=actor)
        except Conflict:
            pass  # it ended meanwhile
