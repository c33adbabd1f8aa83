"""The run lifecycle (SPEC §5): create, run, finish, cancel."""
from __future__ import annotations

import logging
import queue
import threading
import uuid
from concurrent.futures import Executor
from typing import Iterator

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connections, transaction
from django.utils import timezone
from django_q.tasks import async_task

from analytics.selectors import price_for_call
from audit.services import audit_record
from chatter_project.concurrency import work_slot
from chatter_project.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RunCancelled,
    RunError,
    TooManyRuns,
    Unavailable,
)
from conversations.models import Conversation, Message
from conversations.services import MAX_MESSAGE_CHARS, conversation_create, message_save
from workflows.engine.compile import graph_run
from workflows.engine.config import config_resolve
from workflows.engine.graph import Graph, parse_graph
from workflows.engine.nodes import last_ai_message
from workflows.engine.providers import provider_check
from workflows.engine.runtime import NullHooks, RunContext
from workflows.events import Sink
from workflows.models import WorkflowExecution
from workflows.recorder import COUNTERS, ExecutionRecorder, cancel_signal_local
from workflows.services.definitions import visible_definition
from workflows.services.templates import is_uuid, visible_template
from workflows.signals import execution_finished

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status
_DONE = object()


def models_check(graph: Graph, config: dict) -> None:
    """Every provider/model the run may call must exist and be priced, or we could not account for it."""
    pairs = {(config["provider"], config["model"])}
    for node in graph.nodes:
        if node.type == "model" and (node.config.get("provider") or node.config.get("model")):
            provider = node.config.get("provider") or config["provider"]
            model = node.config.get("model") or (
                config["model"] if provider == config["provider"] else settings.CHATTER_PROVIDER_DEFAULT_MODELS[provider]
            )
            pairs.add((provider, model))
    for provider, model in sorted(pairs):
        provider_check(provider)
        if price_for_call(provider=provider, model=model) is None:
            raise InvalidInput(
                f"unknown model {model!r} for provider {provider!r} (no price configured)",
                details=[{"path": "config.model", "code": "unknown_model",
                          "message": f"{provider}/{model} has no ModelPrice row; add one to use it"}],
            )


def _run_slot_take(owner) -> None:
    """The last step of the creating transaction, once the new run is written: under a lock on the owner's row
    (simultaneous requests take turns, each seeing the runs committed before it), refuse the run when the
    owner now has more than CHATTER_MAX_CONCURRENT_RUNS pending or running, the new one included. Taken last, the
    lock is held only until the commit, never while the transaction waits for a conversation's lock."""
    # FOR NO KEY UPDATE: unlike FOR UPDATE it does not block the KEY SHARE locks that every insert referencing
    # the user takes (runs, messages, audit rows), which deadlocked one user's concurrent turns.
    get_user_model().objects.select_for_update(no_key=True).filter(pk=owner.pk).values_list("pk").first()
    running = WorkflowExecution.objects.filter(owner=owner, status__in=(Status.PENDING, Status.RUNNING)).count()
    if running > settings.CHATTER_MAX_CONCURRENT_RUNS:
        raise TooManyRuns(f"at most {settings.CHATTER_MAX_CONCURRENT_RUNS} runs at once per user")


def execution_create(
    *,
    owner,
    mode: str = WorkflowExecution.Mode.SYNC,
    template: str | None = None,
    definition_id=None,
    graph: dict | None = None,
    message: str | None = None,
    variables: dict | None = None,
    conversation_id=None,
    config: dict | None = None,
    chat: bool = False,
    schedule=None,
    correlation_id: str = "",
) -> WorkflowExecution:
    """Validate a run request and write the pending execution. Bad input raises before any row exists."""
    if chat and not template and not definition_id and graph is None:
        template = "universal_chat"
    sources = [s for s in (template, definition_id, graph) if s is not None]
    if len(sources) != 1:
        raise InvalidInput("give exactly one of template, definition_id, graph")
    if mode not in WorkflowExecution.Mode.values:
        raise InvalidInput(f"unknown mode {mode!r}")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS):
        raise InvalidInput(f"message must be text of at most {MAX_MESSAGE_CHARS} characters")
    if chat and not (message or "").strip():
        raise InvalidInput("a chat turn needs a message", details=[{"path": "message", "code": "required",
                                                                    "message": "message is required"}])
    if variables is not None and not isinstance(variables, dict):
        raise InvalidInput("variables must be an object")

    template_row = definition = None
    params: dict = {}
    if template is not None:
        template_row = visible_template(owner=owner, key_or_id=template)
        raw_graph, params, workflow_type = template_row.graph, template_row.params, "template"
    elif definition_id is not None:
        definition = visible_definition(owner=owner, definition_id=definition_id)
        raw_graph, workflow_type = {"nodes": definition.nodes, "edges": definition.edges}, "definition"
        params = (definition.metadata or {}).get("config") or {}
    else:
        raw_graph, workflow_type = graph, "custom"
    parsed = parse_graph(raw_graph)
    resolved = config_resolve(params, config)
    models_check(parsed, resolved)
    if chat:
        workflow_type = "chat"

    conversation = None
    if conversation_id is not None:
        conversation = Conversation.objects.filter(pk=conversation_id, owner=owner).first() if is_uuid(
            conversation_id) else None
        if conversation is None:
            raise NotFound("conversation not found")
    try:
        with transaction.atomic():
            if conversation is None and chat:
                conversation = conversation_create(owner=owner, title=message.strip()[:60])
            execution = WorkflowExecution.objects.create(
                owner=owner, workflow_type=workflow_type, template=template_row, definition=definition,
                definition_version=definition.version if definition else None, conversation=conversation,
                schedule=schedule, mode=mode, provider=resolved["provider"], model=resolved["model"],
                config=resolved, graph=parsed.as_dict(),
                input_data={"message": message, "variables": variables or {}},
                correlation_id=correlation_id or uuid.uuid4().hex,
            )
            if conversation is not None and message:
                message_save(
                    conversation_id=conversation.pk, role=Message.Role.USER, content=message, execution=execution,
                    provider_used=resolved["provider"], model_used=resolved["model"], actor=owner,
                )
            if mode in (WorkflowExecution.Mode.BACKGROUND, WorkflowExecution.Mode.SCHEDULED):
                # Only a committed execution may reach a worker: the task would not find it otherwise.
                transaction.on_commit(lambda: execution_enqueue(execution_id=execution.pk))
            _run_slot_take(owner)
    except TooManyRuns:
        audit_record(action="limit.exceeded", actor=owner, data={
            "limit": "max_concurrent_runs", "value": settings.CHATTER_MAX_CONCURRENT_RUNS})
        raise
    return execution


def execution_enqueue(*, execution_id) -> None:
    """Hand a committed pending execution to the django-q2 workers (`manage.py qcluster`). A run the queue
    refuses ends `failed` (queue_unavailable) at once rather than wait for a worker that will never come, and
    the caller gets a 503 naming it."""
    try:
        async_task("workflows.tasks.execution_run_task", str(execution_id),
                   task_name=f"execution-{execution_id}", group="executions")
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the run must not stay pending
        logger.exception("execution %s could not be queued", execution_id)
        error = RunError(f"the run could not be queued: {type(exc).__name__}: {exc}", error_type="queue_unavailable")
        try:
            execution_end_from_ledger(execution_id=execution_id, error=error, from_statuses=(Status.PENDING,))
        except Exception:  # noqa: BLE001 - the database is down too: the sweep ends it later (I4)
            logger.exception("execution %s: not queued and not ended; the sweep will end it", execution_id)
        raise Unavailable("the run could not be queued; it was recorded as failed", code="queue_unavailable",
                          details={"execution_id": str(execution_id)}) from exc


# --- running --------------------------------------------------------------------------------------------
def execution_run(*, execution_id, sink: Sink | None = None) -> WorkflowExecution:
    """Run a pending execution to a terminal state. Safe to call twice: only one caller claims it. Once it is
    claimed, every way the run can go wrong (its set-up included) still ends it through execution_finish."""
    started_at = timezone.now()
    claimed = WorkflowExecution.objects.filter(
        pk=execution_id, status=Status.PENDING, cancel_requested=False
    ).update(status=Status.RUNNING, started_at=started_at, heartbeat_at=started_at)
    if not claimed:
        return WorkflowExecution.objects.get(pk=execution_id)
    execution = recorder = ctx = None
    state, error = None, None
    try:
        execution = WorkflowExecution.objects.select_related("template", "owner").get(pk=execution_id)
        recorder = ExecutionRecorder(execution, sink=sink, claimed=True)
        ctx = RunContext(config=execution.config, hooks=recorder)
        recorder.started({
            "workflow_type": execution.workflow_type,
            "template": execution.template.key if execution.template_id else None,
            "definition": str(execution.definition_id) if execution.definition_id else None,
            "conversation_id": str(execution.conversation_id) if execution.conversation_id else None,
            "provider": execution.provider, "model": execution.model,
        })
        recorder.heartbeat_start()
        state = graph_run(parse_graph(execution.graph), ctx=ctx, message=execution.input_data.get("message"),
                          variables=execution.input_data.get("variables"))
    except RunError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - an engine bug still ends the run, with its usage kept
        logger.exception("execution %s crashed", execution_id)
        error = RunError(f"{type(exc).__name__}: {exc}", error_type="internal_error")
    finally:
        if recorder is not None:
            recorder.forget()
    if recorder is not None:
        try:
            return _execution_finish_retried(execution=execution, recorder=recorder, ctx=ctx, state=state,
                                             error=error)
        except Exception as exc:  # noqa: BLE001 - e.g. a row it writes is refused: end the run from its ledger
            logger.exception("execution %s could not be ended normally", execution_id)
            error = RunError(f"the run could not be recorded: {type(exc).__name__}: {exc}",
                             error_type="internal_error")
    ended = execution_end_from_ledger(execution_id=execution_id, error=error, sink=sink,
                                      from_statuses=(Status.RUNNING,))
    return ended if ended is not None else WorkflowExecution.objects.get(pk=execution_id)


def _execution_finish_retried(**kwargs) -> WorkflowExecution:
    """execution_finish, once more if the database failed its transaction (PostgreSQL breaking a deadlock, SQLite
    busy past its timeout): nothing of it was written, the run still holds what it held."""
    try:
        return execution_finish(**kwargs)
    except OperationalError:
        logger.warning("execution %s: its ending failed, trying again", kwargs["execution"].pk, exc_info=True)
    return execution_finish(**kwargs)


# What conversation_updated carries (with total_cost, as a string).
_CONVERSATION_TOTALS = ("message_count", "prompt_tokens", "completion_tokens", "total_tokens")


def execution_finish(*, execution: WorkflowExecution, recorder: ExecutionRecorder, ctx: RunContext,
                     state: dict | None, error: RunError | None,
                     from_status: str = Status.RUNNING) -> WorkflowExecution:
    """The terminal transaction: status, the trace the run still holds (its last nodes), assistant message,
    events and every aggregate commit together. Every run ends here, whether it ran (from `running`) or was
    cancelled before it started (from `pending`)."""
    now = timezone.now()
    status = Status.COMPLETED if error is None else (
        Status.CANCELLED if isinstance(error, RunCancelled) else Status.FAILED)
    reply = last_ai_message(state) if state else None
    content = (reply.content if isinstance(reply.content, str) else str(reply.content)) if reply else ctx.partial_text
    call = recorder.last_call
    elapsed_ms = int((now - execution.started_at).total_seconds() * 1000) if execution.started_at else 0
    ended = {
        "status": status, "completed_at": now, "execution_time_ms": elapsed_ms,
        "output_data": {"content": content, "variables": (state or {}).get("variables") or {}},
        "error_type": error.error_type if error else "", "error_message": error.message if error else "",
        "tool_calls": recorder.tool_calls,
        **({"cancel_requested": True} if status == Status.CANCELLED else {}),
    }
    with recorder.kept_on_failure(), transaction.atomic():
        finished = WorkflowExecution.objects.filter(pk=execution.pk, status=from_status).update(**ended)
        if not finished:  # someone else (the recovery sweep, a worker claiming it) got there first
            recorder.discard_held()
            execution.refresh_from_db()
            recorder.deliver_missed()
            return execution
        for name, value in ended.items():
            setattr(execution, name, value)
        # The usage counters as committed: the run's own LLM calls, plus any re-pricing (recompute_costs) that
        # changed them meanwhile; the message, the events and the aggregates all book these figures.
        totals = WorkflowExecution.objects.filter(pk=execution.pk).values(*COUNTERS).get()
        for name, value in totals.items():
            setattr(execution, name, value)
        if error is not None:
            recorder.node_abandoned(error=error.message)
        message = None
        if execution.conversation_id is not None:
            message = message_save(
                conversation_id=execution.conversation_id, role=Message.Role.ASSISTANT, content=content,
                execution=execution, prompt_tokens=execution.prompt_tokens,
                completion_tokens=execution.completion_tokens, cached_prompt_tokens=ctx.usage.cached_prompt_tokens,
                reasoning_tokens=ctx.usage.reasoning_tokens, cost=execution.cost,
                usage_estimated=ctx.usage.estimated, usage_raw=ctx.usage.raw,
                provider_used=call.provider if call else execution.provider,
                model_used=call.model if call else execution.model,
                finish_reason=(reply.response_metadata.get("finish_reason", "") if reply else "") or (
                    "" if error is None else status),
                response_time_ms=elapsed_ms,
                tool_calls=[{"name": c["name"], "args": c["args"]} for c in (reply.tool_calls if reply else [])],
                error_message=error.message if error else "", actor=execution.owner,
            )
            recorder.emit("message_saved", {
                "message_id": str(message.pk), "conversation_id": str(execution.conversation_id),
                "role": message.role, "total_tokens": message.total_tokens, "cost": str(message.cost),
            })
        summary = {
            "status": status, "execution_time_ms": elapsed_ms,
            **{name: getattr(execution, name) for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "cost": str(execution.cost), "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls,
            "message_id": str(message.pk) if message else None,
        }
        if error is None:
            recorder.emit("workflow_completed", summary)
        else:
            recorder.emit(f"workflow_{status}", {"error_type": error.error_type, "error_message": error.message,
                                                 **summary})
        recorder.audit(f"execution.{status}", {
            "error_type": error.error_type if error else None, "total_tokens": execution.total_tokens,
            "cost": execution.cost, "llm_calls": execution.llm_calls, "tool_calls": execution.tool_calls})
        recorder.write_held()
        if execution.conversation_id is not None:
            # Read under the conversation's lock (message_save took it): exactly what commits. The caller gets the
            # fresh row too (a sync view renders it).
            execution.conversation = Conversation.objects.get(pk=execution.conversation_id)
            conversation = execution.conversation
            transaction.on_commit(lambda: recorder.publish("conversation_updated", {
                "conversation_id": str(conversation.pk),
                **{name: getattr(conversation, name) for name in _CONVERSATION_TOTALS},
                "total_cost": str(conversation.total_cost)}))
        # Rows every run of a template updates (its analytics), then the audit chain's head: the locks every
        # run's ending shares are taken last, so each is held only to the commit.
        execution_finished.send(sender=WorkflowExecution, execution=execution)
        recorder.write_audits()
    return execution



def execution_run_in_thread(*, execution_id, sink: Sink, on_done, executor: Executor | None = None) -> None:
    """Run in another thread, handing every event to `sink`; `on_done()` after the run has finished. With
    `executor` (a streaming request's own thread: chatter_project/handlers.py) the run goes there once the view
    has returned and uses that thread's connection; else a thread is made for it."""

    def work() -> None:
        try:
            with work_slot():  # in line with this process's requests; the run stays pending until then
                execution_run(execution_id=execution_id, sink=sink)
        except Exception:  # noqa: BLE001
            logger.exception("execution %s crashed in its thread", execution_id)
        finally:
            if executor is None:
                connections.close_all()  # this thread's connections: the thread ends with the run
            on_done()

    if executor is not None:
        executor.submit(work)
    else:
        threading.Thread(target=work, name=f"run-{execution_id}", daemon=True).start()


def execution_stream(*, execution_id) -> Iterator[dict]:
    """The same run as execution_run, yielding §6 envelopes as they happen (tokens included). The run goes
    on in its own thread: a consumer that stops reading never stops or fails it."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    execution_run_in_thread(execution_id=execution_id, sink=events.put, on_done=lambda: events.put(_DONE))
    while (item := events.get()) is not _DONE:
        yield item


def execution_cancel(*, execution: WorkflowExecution, actor=None) -> WorkflowExecution:
    """Cancel a pending run at once, or ask a running one to stop at its next token or node boundary."""
    if execution.is_terminal:
        raise Conflict(f"the run is already {execution.status}", code="not_cancellable")
    audit_record(action="execution.cancel_requested", actor=actor, target=execution,
                 correlation_id=execution.correlation_id, data={"status": execution.status})
    if execution.status == Status.PENDING:
        execution = execution_finish(
            execution=execution, recorder=ExecutionRecorder(execution),
            ctx=RunContext(config=execution.config, hooks=NullHooks()), state=None,
            error=RunCancelled("cancelled before it started"), from_status=Status.PENDING,
        )
        if execution.status == Status.CANCELLED:
            return execution
    WorkflowExecution.objects.filter(pk=execution.pk).update(cancel_requested=True)
    cancel_signal_local(execution.pk)
    execution.refresh_from_db()
    return execution


def execution_end_from_ledger(*, execution_id, error: RunError, sink: Sink | None = None,
                              from_statuses=(Status.PENDING, Status.RUNNING)) -> WorkflowExecution | None:
    """End a run from what its rows hold rather than from the process that ran it (the recovery sweep, or a
    run whose own ending failed): nodes left running fail with their ledger's counters, the run's usage is its
    LLM call ledger, then execution_finish. None when the run was not in one of `from_statuses`."""
    with transaction.atomic():
        # The lock keeps the run's own process (if it still lives) from writing while the trace is closed;
        # its next write then collides with these events and it stops (recorder.ExecutionRecorder._step).
        locked = WorkflowExecution.objects.select_for_update().filter(
            pk=execution_id, status__in=from_statuses).first()
        if locked is None:
            return None
        recorder = ExecutionRecorder(locked, sink=sink)  # counts the events under the lock: its seq follows the last
        recorder.nodes_interrupted(error=error.message)
        usage, llm_calls, text = recorder.recorded_so_far()
        ctx = RunContext(config=locked.config, hooks=NullHooks(), usage=usage, llm_calls=llm_calls,
                         tool_calls=recorder.tool_calls, partial_text=text)
        return execution_finish(execution=locked, recorder=recorder, ctx=ctx, state=None, error=error,
                                from_status=locked.status)
