"""A run's ending: its pause for input, its terminal transaction, and its end from its rows."""
from __future__ import annotations

from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from budgets.services import budget_alerts_send, budget_crossings_own, budget_settle
from conversations.models import Message
from core.db import retried_on_conflict, write_atomic
from core.errors import ProviderError, RunCancelled, RunError
from core.money import usd
from engine.chat_messages import content_text, tool_calls_as_sent
from engine.hooks import NullHooks
from engine.nodes import last_ai_message
from engine.python_graphs import MESSAGES_USAGE, STOPPED_BEFORE, booked_as_json
from engine.runtime import RunContext
from workflows import statements
from workflows.events import conversation_updated_data
from workflows.ledger import calls_by_model
from workflows.models import WorkflowExecution
from workflows.recorder import ExecutionRecorder, run_recorder
from workflows.run_messages import citations_of, run_messages_save
from workflows.signals import execution_ending, execution_finished

Status = WorkflowExecution.Status
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
                     from_status: str = Status.RUNNING, ending: dict | None = None,
                     savepoint: bool = True, insert: bool = False) -> WorkflowExecution:
    """The terminal transaction: status and counters, the trace the run still holds, the assistant message, the
    events, every aggregate (the receivers of execution_finished) and the audit rows commit together; its locks
    are taken in the one order (core.db): the run, its conversation, budget periods, aggregates, the
    audit chain. `savepoint=False`: part of its caller's transaction (the run's creation), which a failure here
    rolls back whole. `insert`: the run's row is not in the database yet (a gateway call written whole): it is
    inserted as it ends (statements.execution_insert_ended); on PostgreSQL, a run with no conversation and no
    budget held is then written by one statement, its row riding on its trace's write, atomic by itself (no
    BEGIN and COMMIT outside a transaction: bench/RESULTS.md, B8)."""
    now = timezone.now()
    status = Status.COMPLETED if error is None else (
        Status.CANCELLED if isinstance(error, RunCancelled) else Status.FAILED)
    reply = last_ai_message(state) if state else None
    content = content_text(reply.content) if reply else ctx.partial_text
    call = recorder.last_call
    elapsed_ms = int((now - execution.started_at).total_seconds() * 1000) if execution.started_at else 0
    citations = citations_of(state)
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
                           else {}),
                        # the graph's exception that ended it, as LangGraph's server names it
                        **({"raised": error.raised} if error is not None and error.raised else {})},
        "error_type": error.error_type if error else "", "error_message": error.message if error else "",
        "stream_progress": {},  # a call's stream in progress, carried by the heartbeat: over now
        **({"cancel_requested": True} if status == Status.CANCELLED else {}),
        # a registered graph picks its own models: the run names the one that answered last
        **({"provider": call.provider, "model": call.model} if call and state and MESSAGES_USAGE in state else {}),
    }
    one_statement = insert and connection.vendor == "postgresql" and execution.conversation_id is None \
        and not recorder.budget.holds
    inserted = []  # the run's row, riding on the last write
    with recorder.kept_on_failure(), (write_atomic(one_statement=True) if one_statement
                                      else transaction.atomic(savepoint=savepoint)):
        if one_statement:
            inserted.append(statements.execution_ended_insert(execution, ended=ended, tool_calls=recorder.tool_calls,
                                                              added=recorder.counters_added()))
            finished = 1
        elif insert:
            finished = statements.execution_insert_ended(execution, ended=ended, tool_calls=recorder.tool_calls,
                                                         added=recorder.counters_added())
        else:
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
            saved = run_messages_save(execution=execution, state=state, ctx=ctx, reply=reply, content=content,
                                      call=call, error=error, status=status, elapsed_ms=elapsed_ms)
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
            recorder.publish_after_write("conversation_updated", conversation_updated_data(conversation))
        if holds := recorder.budget.holds:  # a shared row (a budget's period): locked late, held to the commit;
            # settled before the terminal event, which must be the run's last (I6)
            crossings = budget_settle(holds=holds, usd=ctx.usage.cost, tokens=ctx.usage.total_tokens)
            # each threshold once per period (the row's lock decides who); in the run's log only its owner's
            in_run = budget_crossings_own(crossings=crossings, holds=holds, owner_id=execution.owner_id)
            for crossing in in_run:
                recorder.emit("budget_threshold", crossing)
                recorder.audit("budget.threshold", crossing)
            if crossings:  # (their webhooks' deliveries written with the run's end)
                budget_alerts_send(crossings=crossings, in_run=in_run)
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
                                                 **({"raised": error.raised} if error.raised else {}), **summary})
        recorder.audit(f"execution.{status}", {
            "error_type": error.error_type if error else None, "total_tokens": execution.total_tokens,
            "cost": execution.cost, "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls})
        execution.turn_messages = messages
        calls = calls_by_model(recorder.calls) + recorder.tool_costs()  # (priced tool calls: provider "mcp")
        # The trace, the audit rows (queued for the chain) and what books the run in aggregates (its analytics: the
        # rows every run's ending shares, whose locks are so held for one round trip, to the commit), in one write.
        riding = [*inserted, *(statement for _, statements in execution_ending.send(
            sender=WorkflowExecution, execution=execution, messages=messages, calls=calls) for statement in statements)]
        recorder.write_held(riding=riding, watchable=not insert)
        execution_finished.send(sender=WorkflowExecution, execution=execution, messages=messages, calls=calls)
    return execution


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
