"""The runner: the one place runs execute (docs/architecture.md#the-run-path). A sync run runs in its caller's thread
(`run`), a streamed one on the runner's threads (`submit`), a background or scheduled one in a worker's task
(workflows.tasks → `run`); each way the same `run`: the graph with an ExecutionRecorder, then `execution_finish`, the
terminal transaction.

A run that cannot end normally (its terminal transaction fails twice) or whose process is gone (the recovery
sweep) ends from what its rows hold: `end_from_ledger`.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import timedelta

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from budgets.services import budget_alerts_send, budget_crossings_own, budget_settle
from conversations.models import Message
from conversations.services import message_save
from core.db import connections_give_back, retried_on_conflict
from core.errors import ProviderError, RunCancelled, RunError, Unavailable
from core.money import usd
from core.tracing import tracing_on
from workflows.engine.chat_messages import tool_call_args, tool_calls_as_sent
from workflows.engine.compile import graph_run
from workflows.engine.config import checkpoints_every_step
from workflows.engine.graph import Graph, parse_graph
from workflows.engine.nodes import last_ai_message
from workflows.engine.python_graphs import (
    MESSAGES_USAGE,
    STOPPED_BEFORE,
    booked_as_json,
    booked_from_json,
    graph_input_of,
    graph_stream_run,
    registered_graph_name,
)
from workflows.engine.hooks import NullHooks
from workflows.engine.runtime import RunContext
from workflows.heartbeat import heartbeat
from workflows.ledger import calls_by_model
from workflows.models import WorkflowExecution
from workflows.recorder import ExecutionRecorder, run_recorder
from workflows.signals import execution_ending, execution_finished
from workflows import statements

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status
_CONVERSATION_TOTALS = ("message_count", "prompt_tokens", "completion_tokens", "total_tokens")

_threads: ThreadPoolExecutor | None = None
_threads_lock = threading.Lock()


def _after_fork() -> None:
    global _threads, _threads_lock
    _threads, _threads_lock = None, threading.Lock()  # a forked child owns none of its parent's threads


os.register_at_fork(after_in_child=_after_fork)


def submit(execution: WorkflowExecution, *, user_message=None, prices: dict | None = None,
           graph: Graph | None = None, resume: dict | None = None, after_crash: bool = False) -> None:
    """Run a written, running execution on one of the runner's CHATTER_RUN_THREADS threads."""
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(settings.CHATTER_RUN_THREADS, thread_name_prefix="chatter-run")
        threads = _threads

    heartbeat.add(execution.pk)  # a run waiting for a free thread still shows that its process is alive

    def work() -> None:
        try:
            run(execution, user_message=user_message, prices=prices, graph=graph, resume=resume,
                after_crash=after_crash)
        except Exception:  # noqa: BLE001 - run() ends every run it can; this is the last word
            logger.exception("execution %s crashed in the runner", execution.pk)
        finally:
            heartbeat.discard(execution.pk)
            connections_give_back()  # a pooled connection goes back (SQLite's stays with the thread for its next run)

    threads.submit(work)


def run(execution: WorkflowExecution, *, user_message=None, prices: dict | None = None,
        graph: Graph | None = None, resume: dict | None = None, after_crash: bool = False) -> WorkflowExecution:
    """Run a claimed (`running`) execution until it ends or waits for input (`waiting`). Every way it can go
    wrong, its set-up included, still ends it through execution_finish. `graph` and `prices`: what the request's
    plan already read (else from the row); `resume` (interrupt id → answer): a paused run goes on from its last
    checkpoint; `after_crash`: a run whose worker died goes on from its last checkpoint (or from its input when
    none was written). Its graph's checkpoints are held for the recorder's writes (a CheckpointHold handed to it)."""
    from workflows.checkpointer import checkpointer  # loads LangGraph, which commands without a run never need

    graph = graph or parse_graph(execution.graph)
    fresh = resume is None and not after_crash
    # A registered graph's thread is its conversation's (the graph's state carries over from run to run), and so
    # is a graph's whose conversation keeps its state (a thread of the Agent Server API: on_thread); any other
    # run's thread is its own.
    registered = registered_graph_name(graph)
    on_thread = bool(registered or execution.input_data.get("on_thread"))
    thread_id = str(execution.conversation_id) if on_thread and execution.conversation_id else str(execution.pk)
    held = checkpointer.hold(thread_id, execution_id=execution.pk, fresh=fresh and thread_id == str(execution.pk))
    spans = ended = None
    if tracing_on():  # its spans, under the context stored with it (core.tracing)
        from workflows.run_spans import RunSpans

        spans = RunSpans(execution, graph_name=registered, resumed=not fresh)
    try:
        with spans.current() if spans is not None else nullcontext():
            ended = _run(execution, user_message=user_message, prices=prices, graph=graph,
                         checkpointer=checkpointer, held=held, resume=resume, fresh=fresh, registered=registered,
                         spans=spans)
        return ended
    finally:
        checkpointer.release(thread_id)
        if spans is not None:
            spans.ended(ended)


def _run(execution: WorkflowExecution, *, user_message, prices: dict | None, graph: Graph, checkpointer,
         held, resume: dict | None, fresh: bool, registered: str | None, spans=None) -> WorkflowExecution:
    from_checkpoint = False
    thread_id = held.thread_id
    try:
        recorder = run_recorder(execution, fresh=fresh, user_message=user_message if fresh else None, prices=prices,
                                checkpoints=held, spans=spans)
        if fresh:
            ctx = RunContext(config=execution.config, hooks=recorder)
        else:
            usage, llm_calls = recorder.resumed()
            ctx = RunContext(config=execution.config, hooks=recorder, usage=usage, llm_calls=llm_calls,
                             tool_calls=recorder.tool_calls)
            latest = checkpointer.get_tuple({"configurable": {"thread_id": thread_id}}) if resume is None else None
            # on a conversation's thread, only a checkpoint this run saved (the latest may be an earlier run's)
            from_checkpoint = latest is not None and (thread_id == str(execution.pk) or (
                latest.metadata or {}).get("run_id") == str(execution.pk))
    except Exception as exc:  # noqa: BLE001 - without a recorder the run can only end from its rows
        logger.exception("execution %s could not start", execution.pk)
        ended = end_from_ledger(execution_id=execution.pk, from_statuses=(Status.RUNNING,), error=RunError(
            f"{type(exc).__name__}: {exc}", error_type="internal_error"))
        return ended if ended is not None else WorkflowExecution.objects.get(pk=execution.pk)
    state = error = None
    try:
        if fresh:
            recorder.started({
                "workflow_type": execution.workflow_type,
                "template": execution.template.key if execution.template_id else None,
                "definition": str(execution.definition_id) if execution.definition_id else None,
                "conversation_id": str(execution.conversation_id) if execution.conversation_id else None,
                "provider": execution.provider, "model": execution.model,
                **({"forked_from": {"execution_id": str(execution.forked_from_id),
                                    "checkpoint_id": execution.forked_from_checkpoint}}
                   if execution.forked_from_checkpoint else {}),
            })
        elif resume is not None:
            recorder.emit("workflow_resumed", {"answered": sorted(resume)})
        else:
            recorder.emit("workflow_resumed", {"answered": [], "attempt": execution.resume_attempts,
                                               "from_checkpoint": from_checkpoint})
        carried = thread_id != str(execution.pk)
        if resume is None and not from_checkpoint and not carried:  # a fork starts (again, after a crash)
            from_checkpoint = _fork_start(execution, checkpointer=checkpointer, thread_id=thread_id)  # from its parent's
        recorder.heartbeat_start()
        run_input = execution.input_data
        if registered:
            state = graph_stream_run(
                registered, ctx=ctx, checkpointer=checkpointer, graph_input=graph_input_of(
                    run_input, message_id=str(recorder.user_message.pk) if recorder.user_message else None),
                thread_id=thread_id, resume=resume, from_checkpoint=from_checkpoint,
                configurable={**(run_input.get("configurable") or {}), "run_id": str(execution.pk)},
                context=run_input.get("context"),
                booked=booked_from_json((execution.output_data or {}).get("messages_usage")),
                streaming=run_input.get("streaming") or "classic",
                stream_checkpoints=bool(run_input.get("stream_checkpoints")),
                graph_streams=run_input.get("graph_streams"),
                checkpoint_id=run_input.get("checkpoint_id") if resume is None and not from_checkpoint else None,
                interrupt_before=run_input.get("interrupt_before"), interrupt_after=run_input.get("interrupt_after"),
                store=import_string(settings.CHATTER_GRAPH_STORE)(owner=execution.owner))
        else:
            # A thread's state is saved at every step (its history, forks); a run's own only at its pauses unless its
            # config asks: a run that cannot pause, and does not go on from a checkpoint, saves nothing.
            every_step = carried or checkpoints_every_step(execution.config, mode=execution.mode)
            saves = every_step or graph.can_pause or resume is not None or from_checkpoint
            state = graph_run(graph, ctx=ctx, message=run_input.get("message"),
                              variables=run_input.get("variables"), messages=run_input.get("messages"),
                              checkpointer=checkpointer if saves else None, thread_id=thread_id, resume=resume,
                              from_checkpoint=from_checkpoint, every_step=every_step, carried=carried,
                              checkpoint_id=run_input.get("checkpoint_id"),
                              message_id=str(recorder.user_message.pk) if carried and recorder.user_message else None,
                              run_id=str(execution.pk), stream_checkpoints=bool(run_input.get("stream_checkpoints")),
                              interrupt_before=run_input.get("interrupt_before"),
                              interrupt_after=run_input.get("interrupt_after"))
    except RunError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - an engine bug still ends the run, with its usage kept
        logger.exception("execution %s crashed", execution.pk)
        error = RunError(f"{type(exc).__name__}: {exc}", error_type="internal_error")
    finally:
        recorder.forget()
    interrupts = (state or {}).get("__interrupt__") if error is None else None
    return run_end(execution=execution, recorder=recorder, ctx=ctx, state=state, error=error, interrupts=interrupts)


def run_end(*, execution: WorkflowExecution, recorder: ExecutionRecorder, ctx: RunContext, state: dict | None,
            error: RunError | None, interrupts: list | None = None, ending: dict | None = None) -> WorkflowExecution:
    """End a run that ran here (or pause it, with `interrupts`): execution_finish, or, when its ending cannot be
    written, from its rows (end_from_ledger). `ending`: how the reply ended (finish reason, tool calls), for a run
    that has no graph state to read it from (the gateway's pass-through)."""
    try:
        if interrupts:
            return execution_pause(execution=execution, recorder=recorder, ctx=ctx, interrupts=interrupts,
                                   booked=(state or {}).get(MESSAGES_USAGE))
        return execution_finish(execution=execution, recorder=recorder, ctx=ctx, state=state, error=error,
                                ending=ending)
    except (OperationalError, Unavailable):  # deadlocked past its retries, SQLite busy past its timeout, the
        # connection lost: nothing was written
        logger.warning("execution %s: its ending failed", execution.pk, exc_info=True)
    except Exception as exc:  # noqa: BLE001 - e.g. a row it writes is refused: end the run from its rows
        logger.exception("execution %s could not be ended normally", execution.pk)
        error = RunError(f"the run could not be recorded: {type(exc).__name__}: {exc}", error_type="internal_error")
    try:  # what the run still holds (its last LLM calls) goes on disk before the run ends from its rows (I5)
        recorder.flush()
    except Exception:  # noqa: BLE001
        logger.exception("execution %s: its last trace could not be written", execution.pk)
    ended = end_from_ledger(execution_id=execution.pk, error=error or RunError(
        "the run could not be recorded", error_type="internal_error"), from_statuses=(Status.RUNNING,))
    return ended if ended is not None else WorkflowExecution.objects.get(pk=execution.pk)


def _fork_start(execution: WorkflowExecution, *, checkpointer, thread_id: str) -> bool:
    """A fork's graph goes on from its parent's checkpoint, copied (without its pending writes: the step after
    it runs again) as the first of its own thread's. Whether the run is a fork."""
    if not execution.forked_from_checkpoint or execution.forked_from_id is None:
        return False
    source = checkpointer.get_tuple({"configurable": {
        "thread_id": str(execution.forked_from_id), "checkpoint_ns": "",
        "checkpoint_id": execution.forked_from_checkpoint}})
    if source is None:
        raise RunError("the checkpoint to fork from is gone (pruned with its run's events)", error_type="not_found")
    checkpointer.put({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, source.checkpoint,
                     {**source.metadata, "source": "fork"}, {})
    return True


@retried_on_conflict
def execution_pause(*, execution: WorkflowExecution, recorder: ExecutionRecorder, ctx: RunContext,
                    interrupts: list, booked: dict | None = None) -> WorkflowExecution:
    """The run waits for input: status `waiting`, an `input_required` event per question (LangGraph's Interrupts),
    what it holds and its graph's checkpoints, in one transaction. Its Python execution ends here: resuming it
    (workflows.services.waiting) runs it again from its last checkpoint, in any process."""
    now = timezone.now()
    questions = [question_of(interrupt) for interrupt in interrupts]
    deadlines = [now + timedelta(seconds=q["timeout_s"]) for q in questions if q.get("timeout_s")]
    values = {"status": Status.WAITING, "waiting_until": min(deadlines, default=None), "stream_progress": {},
              "heartbeat_at": None, "output_data": {"content": "", "input_required": questions,
                                                    # a registered graph's messages so far and their calls' usage
                                                    **({"messages_usage": booked_as_json(booked)} if booked else {})}}
    with recorder.kept_on_failure(), transaction.atomic():
        paused = WorkflowExecution.objects.filter(pk=execution.pk, status=Status.RUNNING).update(
            **values, tool_calls=recorder.tool_calls, **recorder.counters_increments())
        if not paused:  # ended meanwhile by someone else (the recovery sweep)
            recorder.discard_held()
            execution.refresh_from_db()
            return execution
        for question in questions:
            recorder.emit("input_required", {name: question[name] for name in (
                "node_id", "interrupt_id", "prompt", "schema", "value", "breakpoint") if name in question})
        recorder.audit("execution.waiting", {"interrupt_ids": [q["interrupt_id"] for q in questions]})
        recorder.write_held()
    for name, value in values.items():
        setattr(execution, name, value)
    execution.prompt_tokens, execution.completion_tokens = ctx.usage.prompt_tokens, ctx.usage.completion_tokens
    execution.total_tokens, execution.cost = ctx.usage.total_tokens, ctx.usage.cost
    execution.llm_calls, execution.tool_calls = ctx.llm_calls, recorder.tool_calls
    execution.turn_messages = [recorder.user_message] if recorder.user_message is not None else []
    return execution


def question_of(interrupt) -> dict:
    """A LangGraph Interrupt as the question a run waits on: a human_input node's value is its question; a Python
    graph's interrupt(value) may hold anything, kept whole as `value` (its prompt: the value when it is text)."""
    value = interrupt.value
    if isinstance(value, dict) and {"node_id", "prompt"} <= value.keys():
        return {"interrupt_id": interrupt.id, **value}
    return {"interrupt_id": interrupt.id, "node_id": None, "prompt": value if isinstance(value, str) else "",
            "schema": None, "value": value}


@retried_on_conflict
def execution_finish(*, execution: WorkflowExecution, recorder: ExecutionRecorder, ctx: RunContext,
                     state: dict | None, error: RunError | None,
                     from_status: str = Status.RUNNING, ending: dict | None = None) -> WorkflowExecution:
    """The terminal transaction: status and counters, the trace the run still holds, the assistant message, the
    events, every aggregate (the receivers of execution_finished) and the audit rows commit together; its locks
    are taken in the one order (core.db): the run, its conversation, budget periods, aggregates, the
    audit chain."""
    now = timezone.now()
    status = Status.COMPLETED if error is None else (
        Status.CANCELLED if isinstance(error, RunCancelled) else Status.FAILED)
    reply = last_ai_message(state) if state else None
    content = (reply.content if isinstance(reply.content, str) else str(reply.content)) if reply else ctx.partial_text
    call = recorder.last_call
    elapsed_ms = int((now - execution.started_at).total_seconds() * 1000) if execution.started_at else 0
    citations = _citations(state)
    ended = {
        "status": status, "completed_at": now, "execution_time_ms": elapsed_ms,
        "output_data": {"content": content, "variables": (state or {}).get("variables") or {},
                        **(_reply_ending(reply) if reply is not None else ending or {}),
                        # the knowledge chunks the answer was given (a retrieval node's), best first
                        **({"citations": citations} if citations else {}),
                        # the sub-buckets of the run's usage, as its LLM calls record them (the gateway's `usage`)
                        "cached_prompt_tokens": ctx.usage.cached_prompt_tokens,
                        "reasoning_tokens": ctx.usage.reasoning_tokens,
                        # a registered graph stopped at a static breakpoint: the nodes its thread runs next
                        **({"next": state[STOPPED_BEFORE]} if state and state.get(STOPPED_BEFORE) else {}),
                        # the model name whose deployment answered last (after a fallback, the fallback's)
                        **({"answered_model": call.requested_model} if call and error is None else {}),
                        # what a failed provider's upstream said, a caller's answer is made of (gateway.errors)
                        **({"upstream": error.upstream} if isinstance(error, ProviderError) and error.upstream
                           else {})},
        "error_type": error.error_type if error else "", "error_message": error.message if error else "",
        "stream_progress": {},  # a call's stream in progress, carried by the heartbeat: over now
        **({"cancel_requested": True} if status == Status.CANCELLED else {}),
        # a registered graph picks its own models: the run names the one that answered last
        **({"provider": call.provider, "model": call.model} if call and state and MESSAGES_USAGE in state else {}),
    }
    with recorder.kept_on_failure(), transaction.atomic():
        finished = statements.execution_finish(execution.pk, from_status=from_status, ended=ended,
                                               tool_calls=recorder.tool_calls, added=recorder.counters_added())
        if not finished:  # someone else (the recovery sweep, a worker claiming it) got there first
            recorder.discard_held()
            execution.refresh_from_db()
            return execution
        for name, value in ended.items():
            setattr(execution, name, value)
        # The run's counters: everything it recorded (here, or in the ledger for a run ended from its rows).
        execution.prompt_tokens, execution.completion_tokens = ctx.usage.prompt_tokens, ctx.usage.completion_tokens
        execution.total_tokens, execution.cost = ctx.usage.total_tokens, ctx.usage.cost
        execution.llm_calls, execution.tool_calls = ctx.llm_calls, recorder.tool_calls
        if error is not None:
            recorder.node_abandoned(error=error.message)
        messages = [recorder.user_message] if recorder.user_message is not None else []
        if execution.conversation_id is not None:
            if state is not None and MESSAGES_USAGE in state:  # a registered graph: every message it produced
                saved = _graph_messages_save(execution=execution, state=state, ctx=ctx, elapsed_ms=elapsed_ms)
            else:
                saved = [message_save(
                    conversation_id=execution.conversation_id, role=Message.Role.ASSISTANT, content=content,
                    execution=execution, prompt_tokens=execution.prompt_tokens,
                    completion_tokens=execution.completion_tokens,
                    cached_prompt_tokens=ctx.usage.cached_prompt_tokens,
                    reasoning_tokens=ctx.usage.reasoning_tokens, cost=execution.cost,
                    usage_estimated=ctx.usage.estimated, usage_raw=ctx.usage.raw,
                    provider_used=call.provider if call else execution.provider,
                    model_used=call.model if call else execution.model,
                    finish_reason=(reply.response_metadata.get("finish_reason", "") if reply else "") or (
                        "" if error is None else status),
                    response_time_ms=elapsed_ms,
                    tool_calls=_stored_tool_calls(reply),
                    error_message=error.message if error else "", actor=execution.owner,
                    # on a thread that keeps its graph's state: the answer's id there
                    metadata={**({"message_id": reply.id} if reply is not None and "turn_start" in state else {}),
                              **({"citations": citations} if citations else {})} or None,
                )]
            for message in saved:
                messages.append(message)
                recorder.emit("message_saved", {
                    "message_id": str(message.pk), "conversation_id": str(execution.conversation_id),
                    "role": message.role, "total_tokens": message.total_tokens, "cost": usd(message.cost),
                })
        if execution.conversation_id is not None and messages:
            message = messages[-1]
            conversation = message.conversation  # as this message left it, under its lock: exactly what commits
            execution.conversation = conversation
            recorder.publish_after_write("conversation_updated", {
                "conversation_id": str(conversation.pk),
                **{name: getattr(conversation, name) for name in _CONVERSATION_TOTALS},
                "total_cost": usd(conversation.total_cost)})
        if holds := recorder.budget.holds:  # a shared row (a budget's period): locked late, held to the commit;
            # settled before the terminal event, which must be the run's last (I6)
            crossings = budget_settle(holds=holds, usd=ctx.usage.cost, tokens=ctx.usage.total_tokens)
            # each threshold once per period (the row's lock decides who); in the run's log only its owner's
            in_run = budget_crossings_own(crossings=crossings, holds=holds, owner_id=execution.owner_id)
            for crossing in in_run:
                recorder.emit("budget_threshold", crossing)
                recorder.audit("budget.threshold", crossing)
            if crossings:
                transaction.on_commit(lambda: budget_alerts_send(crossings=crossings, in_run=in_run))
        summary = {
            "status": status, "execution_time_ms": elapsed_ms,
            **{name: getattr(execution, name) for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "cost": usd(execution.cost), "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls,
            "message_id": str(messages[-1].pk) if execution.conversation_id is not None and messages else None,
        }
        if error is None:
            recorder.emit("workflow_completed", summary)
        else:
            recorder.emit(f"workflow_{status}", {"error_type": error.error_type, "error_message": error.message,
                                                 **summary})
        recorder.audit(f"execution.{status}", {
            "error_type": error.error_type if error else None, "total_tokens": execution.total_tokens,
            "cost": execution.cost, "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls})
        execution.turn_messages = messages
        calls = calls_by_model(recorder.calls) + recorder.tool_costs()  # (priced tool calls: provider "mcp")
        # The trace, the audit rows (queued for the chain) and what books the run in aggregates (its analytics: the
        # rows every run's ending shares, whose locks are so held for one round trip, to the commit), in one write.
        riding = [statement for _, statements in execution_ending.send(
            sender=WorkflowExecution, execution=execution, messages=messages, calls=calls) for statement in statements]
        recorder.write_held(riding=riding)
        execution_finished.send(sender=WorkflowExecution, execution=execution, messages=messages, calls=calls)
    return execution


_ROLES = {"human": Message.Role.USER, "ai": Message.Role.ASSISTANT, "tool": Message.Role.TOOL,
          "system": Message.Role.SYSTEM}


def _graph_messages_save(*, execution: WorkflowExecution, state: dict, ctx: RunContext,
                         elapsed_ms: int) -> list[Message]:
    """The messages a registered graph's run added to its state, in order, each saved to the conversation: an AI
    message with the usage of the model call that produced it; what no message took (a call whose reply the graph
    kept elsewhere, calls before the run paused) rides on its last AI message, or on an assistant message of its
    own, so the run's messages hold exactly its usage (I3)."""
    from langchain_core.messages import BaseMessage

    saved_before = Message.objects.filter(conversation_id=execution.conversation_id).exclude(metadata__message_id=None)
    known = set(saved_before.values_list("metadata__message_id", flat=True))
    branched_at = _messages_at_branch_point(execution)
    if branched_at is not None:  # a message of the branch it left, produced again under the same id, is its own
        known = (known & branched_at) | set(saved_before.filter(execution=execution).values_list(
            "metadata__message_id", flat=True))
    # the run's own message, saved before it ran, is in the graph's state under its row's id (graph_input_of)
    known |= {str(pk) for pk in Message.objects.filter(execution=execution, role=Message.Role.USER).values_list(
        "pk", flat=True)}
    produced = [m for m in state.get("messages") or [] if isinstance(m, BaseMessage) and m.id not in known]
    booked = state[MESSAGES_USAGE]
    fields = []
    for m in produced:
        content = m.content if isinstance(m.content, str) else m.text
        entry = {"role": _ROLES.get(m.type, Message.Role.ASSISTANT), "content": content, "usage": None,
                 "metadata": {"message_id": m.id, **({"name": m.name} if m.name else {}),
                              **({"tool_call_id": m.tool_call_id} if m.type == "tool" else {})},
                 "tool_calls": _stored_tool_calls(m) if m.type == "ai" else [],
                 "provider": "", "model": "",
                 "finish_reason": (m.response_metadata or {}).get("finish_reason", "") if m.type == "ai" else ""}
        if m.type == "ai" and "usage" in booked.get(m.id, {}):
            entry.update(usage=booked[m.id]["usage"], provider=booked[m.id]["provider"], model=booked[m.id]["model"])
        fields.append(entry)
    rest = ctx.usage
    for entry in fields:
        if entry["usage"] is not None:
            rest = _less(rest, entry["usage"])
    if rest.total_tokens or rest.cost:
        last_ai = next((e for e in reversed(fields) if e["role"] == Message.Role.ASSISTANT), None)
        if last_ai is None:
            last_ai = {"role": Message.Role.ASSISTANT, "content": ctx.partial_text, "usage": None, "metadata": {},
                       "tool_calls": [], "provider": "", "model": "", "finish_reason": ""}
            fields.append(last_ai)
        last_ai["usage"] = rest if last_ai["usage"] is None else last_ai["usage"] + rest
    saved = []
    for entry in fields:
        usage = entry["usage"]
        saved.append(message_save(
            conversation_id=execution.conversation_id, role=entry["role"], content=entry["content"],
            execution=execution, actor=execution.owner, metadata=entry["metadata"], tool_calls=entry["tool_calls"],
            finish_reason=entry["finish_reason"],
            provider_used=entry["provider"] or (execution.provider if usage is not None else ""),
            model_used=entry["model"] or (execution.model if usage is not None else ""),
            response_time_ms=elapsed_ms if entry["role"] == Message.Role.ASSISTANT else 0,
            **({} if usage is None else {
                "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "cached_prompt_tokens": usage.cached_prompt_tokens, "reasoning_tokens": usage.reasoning_tokens,
                "cost": usage.cost, "usage_estimated": usage.estimated, "usage_raw": usage.raw})))
    return saved


def _messages_at_branch_point(execution: WorkflowExecution) -> set[str] | None:
    """A registered graph's run from one of its thread's checkpoints (regenerate, edit): the ids of the messages
    its thread held at that checkpoint, which it did not produce. None for any other run."""
    from langchain_core.messages import BaseMessage

    from workflows.checkpointer import checkpointer

    checkpoint_id = (execution.input_data or {}).get("checkpoint_id")
    if not checkpoint_id:
        return None
    found = checkpointer.get_tuple({"configurable": {"thread_id": str(execution.conversation_id), "checkpoint_ns": "",
                                                     "checkpoint_id": checkpoint_id}})
    messages = (found.checkpoint["channel_values"].get("messages") if found else None) or []
    return {m.id for m in messages if isinstance(m, BaseMessage)}


def _less(total, part):
    """What of `total` usage `part` does not account for."""
    return replace(total, prompt_tokens=total.prompt_tokens - part.prompt_tokens,
                   completion_tokens=total.completion_tokens - part.completion_tokens,
                   cached_prompt_tokens=total.cached_prompt_tokens - part.cached_prompt_tokens,
                   reasoning_tokens=total.reasoning_tokens - part.reasoning_tokens, cost=total.cost - part.cost,
                   raw={})


def _citations(state: dict | None) -> list[dict]:
    """The knowledge chunks a retrieval node gave the run (its state's documents that cite one)."""
    return [document["citation"] for document in (state or {}).get("documents") or [] if "citation" in document]


def _reply_ending(reply) -> dict:
    """How the last reply ended and the tool calls it asked for, OpenAI-shaped (what the gateway answers with), with
    its logprobs and the other choices of a call for several, when the provider gave them."""
    if reply is None:
        return {}
    calls = tool_calls_as_sent(reply)
    metadata = reply.response_metadata
    return {"finish_reason": metadata.get("finish_reason") or ("tool_calls" if calls else "stop"),
            **({"tool_calls": calls} if calls else {}),
            **{name: metadata[name] for name in ("logprobs", "more_choices", "system_fingerprint")
               if metadata.get(name)}}


def _stored_tool_calls(reply) -> list[dict]:
    """A reply's tool calls as its message keeps them: the arguments as the model sent them, and parsed (`args`,
    None when they are no JSON object)."""
    return [{"id": call["id"], "name": call["function"]["name"], "args": tool_call_args(call["function"]["arguments"]),
             "arguments": call["function"]["arguments"]} for call in (tool_calls_as_sent(reply) if reply else [])]


@retried_on_conflict
def end_from_ledger(*, execution_id, error: RunError,
                    from_statuses=(Status.PENDING, Status.RUNNING)) -> WorkflowExecution | None:
    """End a run from what its rows hold rather than from the process that ran it (the recovery sweep, a pending
    run cancelled or refused by the queue, a run whose own ending failed): nodes left running fail with their
    ledger's counters, the run's usage is its LLM call ledger, then execution_finish. None when the run was not
    in one of `from_statuses`."""
    with transaction.atomic():
        # The lock keeps the run's own process (if it still lives) from writing while the trace is closed; its
        # next write then collides with these events and it stops (see workflows.recorder). The run's row only:
        # its owner's row comes later in the lock order than the conversation its ending locks.
        locked = WorkflowExecution.objects.select_for_update(of=("self",)).select_related("owner").filter(
            pk=execution_id, status__in=from_statuses).first()
        if locked is None:
            return None
        # (counts the events under the lock: its seq follows the last)
        recorder = run_recorder(locked, user_message=Message.objects.filter(
            execution_id=execution_id, role=Message.Role.USER).first())
        recorder.interrupted(error=error.message)
        usage, llm_calls, text = recorder.recorded_so_far()
        ctx = RunContext(config=locked.config, hooks=NullHooks(), usage=usage, llm_calls=llm_calls,
                         partial_text=text)
        return execution_finish(execution=locked, recorder=recorder, ctx=ctx, state=None, error=error,
                                from_status=locked.status)
