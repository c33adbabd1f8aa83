"""Writes of workflows: the one engine entry point for every kind of run, and the rows around it.

Lifecycle (SPEC §5): execution_create validates everything and writes the pending execution (and, for
a conversation, the user message) in one transaction; execution_run claims it, runs the graph with an
ExecutionRecorder, and execution_finish writes the terminal state, the assistant message and every
aggregate in one transaction. Blocking, streaming and background runs all go through these three.
"""
from __future__ import annotations

import logging
import math
import queue
import re
import threading
import uuid
from concurrent.futures import Executor
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connections, transaction
from django.utils import timezone
from django_q.tasks import async_task

from analytics.models import ModelPrice, TemplateAnalytics
from analytics.selectors import price_for_call
from audit.services import audit_record
from chatter_project.concurrency import work_slot
from chatter_project.errors import (
    ChatterError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RunCancelled,
    RunError,
    TooManyRuns,
    Unavailable,
)
from conversations.models import Conversation, Message
from conversations.services import MAX_MESSAGE_CHARS, conversation_create, message_save
from workflows.builtins import BUILTIN_TEMPLATES, SEED_PRICES
from workflows.engine.compile import graph_run
from workflows.engine.config import config_errors, config_resolve
from workflows.engine.graph import Graph, normalize_graph, parse_graph
from workflows.engine.nodes import last_ai_message
from workflows.engine.providers import provider_check
from workflows.engine.runtime import NullHooks, RunContext, RunInterrupted
from workflows.events import Sink
from workflows.models import (
    ExecutionEvent,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)
from workflows.recorder import COUNTERS, HEARTBEAT_S, ExecutionRecorder, cancel_signal_local
from workflows.signals import execution_finished

logger = logging.getLogger(__name__)
_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
Status = WorkflowExecution.Status
_DONE = object()


# --- built-ins ------------------------------------------------------------------------------------------
def builtins_seed() -> None:
    """Idempotent: built-in templates (updated in place, version +1 when the graph changes), their analytics
    rows, and seed prices for (provider, pattern) pairs that have none yet."""
    for spec in BUILTIN_TEMPLATES:
        parse_graph(spec["graph"])  # a broken built-in must fail loudly, not at a user's first run
        template, created = WorkflowTemplate.objects.get_or_create(
            key=spec["key"],
            defaults={**{k: spec[k] for k in ("name", "category", "description", "params", "graph")},
                      "is_builtin": True, "is_public": True},
        )
        if not created and (template.graph != spec["graph"] or template.params != spec["params"]):
            template.graph, template.params = spec["graph"], spec["params"]
            template.name, template.description = spec["name"], spec["description"]
            template.version += 1
            template.save()
        TemplateAnalytics.objects.get_or_create(template=template)
    epoch = timezone.make_aware(timezone.datetime(2024, 1, 1))
    for provider, pattern, price_in, price_cached, price_out in SEED_PRICES:
        if not ModelPrice.objects.filter(provider=provider, model_pattern=pattern).exists():
            ModelPrice.objects.create(
                provider=provider, model_pattern=pattern, input_per_million=price_in,
                cached_input_per_million=price_cached, output_per_million=price_out, effective_from=epoch,
            )


# --- templates ------------------------------------------------------------------------------------------
TEMPLATE_EDITABLE = ("name", "description", "category", "params", "graph", "is_public")


def _template_errors(*, key: str | None = None, params: dict | None = None) -> list[dict]:
    errors = []
    if key is not None:
        if not _KEY.fullmatch(key):
            errors.append({"path": "key", "code": "invalid", "message": "key must be a slug: a-z, 0-9, - and _"})
        elif WorkflowTemplate.objects.filter(key=key).exists():
            errors.append({"path": "key", "code": "unique", "message": f"a template with key {key!r} exists"})
    for error in config_errors(params) if params is not None else []:
        errors.append({**error, "path": f"params.{error['path']}" if error["path"] else "params"})
    return errors


def template_create(*, owner, key: str, name: str, graph, description: str = "", category: str = "general",
                    params: dict | None = None, is_public: bool = False) -> WorkflowTemplate:
    """A user's own template: the key is unique across everyone's, the graph is validated and normalized,
    `params` are run config defaults validated like any config."""
    errors = _template_errors(key=key, params=params or {})
    if errors:
        raise InvalidInput("invalid template", details=errors)
    graph = normalize_graph(graph)
    with transaction.atomic():
        template = WorkflowTemplate.objects.create(
            key=key, name=name[:255], description=description, category=category[:64] or "general", owner=owner,
            params=params or {}, graph=graph, is_public=is_public,
        )
        TemplateAnalytics.objects.create(template=template)
        audit_record(action="template.created", actor=owner, target=template,
                     data={"key": key, "version": template.version, "is_public": is_public})
    return template


def _template_owned(template: WorkflowTemplate, owner) -> None:
    if template.is_builtin:
        raise Forbidden("built-in templates are read-only")
    if template.owner_id != owner.pk:
        raise Forbidden("only its owner may change a template")


def template_update(*, template: WorkflowTemplate, actor, **changes) -> WorkflowTemplate:
    """Change a user's template; a change of its graph is validated and bumps the version."""
    _template_owned(template, actor)
    unknown = sorted(set(changes) - set(TEMPLATE_EDITABLE))
    if unknown:
        raise InvalidInput("these fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} cannot be changed"} for name in unknown])
    errors = _template_errors(params=changes.get("params"))
    if errors:
        raise InvalidInput("invalid template", details=errors)
    graph = normalize_graph(changes.pop("graph")) if "graph" in changes else None
    with transaction.atomic():
        locked = WorkflowTemplate.objects.select_for_update().get(pk=template.pk)
        if graph is not None and graph != locked.graph:
            locked.graph = graph
            locked.version += 1
        for field, value in changes.items():
            setattr(locked, field, value)
        locked.save()
        audit_record(action="template.updated", actor=actor, target=locked,
                     data={"key": locked.key, "version": locked.version,
                           "fields": sorted([*changes, *(["graph"] if graph is not None else [])])})
    return locked


def template_delete(*, template: WorkflowTemplate, actor) -> None:
    """Past runs keep their figures (their template becomes null); the template's analytics go with it."""
    _template_owned(template, actor)
    with transaction.atomic():
        audit_record(action="template.deleted", actor=actor, target=template,
                     data={"key": template.key, "version": template.version})
        template.delete()


# --- definitions ----------------------------------------------------------------------------------------
DEFINITION_EDITABLE = ("name", "description", "nodes", "edges", "metadata", "is_public")


def definition_create(*, owner, name: str, nodes, edges, description: str = "", metadata: dict | None = None,
                      template: WorkflowTemplate | None = None, is_public: bool = False) -> WorkflowDefinition:
    graph = parse_graph({"nodes": nodes, "edges": edges}).as_dict()
    if not name or not name.strip():
        raise InvalidInput("a definition needs a name", details=[{"path": "name", "code": "required",
                                                                  "message": "name is required"}])
    with transaction.atomic():
        definition = WorkflowDefinition.objects.create(
            owner=owner, name=name[:255], description=description, nodes=graph["nodes"], edges=graph["edges"],
            metadata=metadata or {}, template=template, is_public=is_public,
        )
        audit_record(action="definition.created", actor=owner, target=definition,
                     data={"name": definition.name, "version": 1, "template": template.key if template else None})
    return definition


def definition_from_template(*, owner, template: str, name: str | None = None) -> WorkflowDefinition:
    """A definition copied from a template the user may see (built-in, public or their own)."""
    source = _visible_template(owner=owner, key_or_id=template)
    return definition_create(
        owner=owner, name=name or source.name, description=source.description, nodes=source.graph["nodes"],
        edges=source.graph["edges"], template=source,
        metadata={"from_template": {"key": source.key, "version": source.version}},
    )


def definition_update(*, definition: WorkflowDefinition, actor=None, **changes) -> WorkflowDefinition:
    """Apply changes; a change of nodes or edges is validated and bumps the version."""
    if actor is not None and definition.owner_id != actor.pk:
        raise Forbidden("only its owner may change a definition")
    unknown = sorted(set(changes) - set(DEFINITION_EDITABLE))
    if unknown:
        raise InvalidInput("these fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} cannot be changed"} for name in unknown])
    if "name" in changes and not (changes["name"] or "").strip():
        raise InvalidInput("a definition needs a name", details=[{"path": "name", "code": "required",
                                                                  "message": "name is required"}])
    nodes, edges = changes.pop("nodes", definition.nodes), changes.pop("edges", definition.edges)
    graph = parse_graph({"nodes": nodes, "edges": edges}).as_dict()
    with transaction.atomic():
        locked = WorkflowDefinition.objects.select_for_update().get(pk=definition.pk)
        graph_changed = graph["nodes"] != locked.nodes or graph["edges"] != locked.edges
        if graph_changed:
            locked.nodes, locked.edges = graph["nodes"], graph["edges"]
            locked.version += 1
        for field, value in changes.items():
            setattr(locked, field, value)
        locked.save()
        audit_record(action="definition.updated", actor=actor or locked.owner, target=locked,
                     data={"version": locked.version, "graph_changed": graph_changed, "fields": sorted(changes)})
    return locked


def definition_delete(*, definition: WorkflowDefinition, actor) -> None:
    """Past runs keep their figures and the version they ran (their definition becomes null); schedules of
    the definition go with it."""
    if definition.owner_id != actor.pk:
        raise Forbidden("only its owner may delete a definition")
    with transaction.atomic():
        audit_record(action="definition.deleted", actor=actor, target=definition,
                     data={"name": definition.name, "version": definition.version})
        definition.delete()


# --- creating a run -------------------------------------------------------------------------------------
def _visible_template(*, owner, key_or_id) -> WorkflowTemplate:
    templates = WorkflowTemplate.objects.filter(is_builtin=True) | WorkflowTemplate.objects.filter(is_public=True)
    templates = templates | WorkflowTemplate.objects.filter(owner=owner)
    lookup = {"key": key_or_id}
    if isinstance(key_or_id, uuid.UUID) or _is_uuid(key_or_id):
        lookup = {"pk": key_or_id}
    template = templates.filter(**lookup).first()
    if template is None:
        raise NotFound(f"template {key_or_id!r} not found")
    return template


def _visible_definition(*, owner, definition_id) -> WorkflowDefinition:
    if not _is_uuid(definition_id):
        raise NotFound("definition not found")
    definition = (WorkflowDefinition.objects.filter(owner=owner) | WorkflowDefinition.objects.filter(
        is_public=True)).filter(pk=definition_id).first()
    if definition is None:
        raise NotFound("definition not found")
    return definition


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _models_check(graph: Graph, config: dict) -> None:
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
        template_row = _visible_template(owner=owner, key_or_id=template)
        raw_graph, params, workflow_type = template_row.graph, template_row.params, "template"
    elif definition_id is not None:
        definition = _visible_definition(owner=owner, definition_id=definition_id)
        raw_graph, workflow_type = {"nodes": definition.nodes, "edges": definition.edges}, "definition"
        params = (definition.metadata or {}).get("config") or {}
    else:
        raw_graph, workflow_type = graph, "custom"
    parsed = parse_graph(raw_graph)
    resolved = config_resolve(params, config)
    _models_check(parsed, resolved)
    if chat:
        workflow_type = "chat"

    conversation = None
    if conversation_id is not None:
        conversation = Conversation.objects.filter(pk=conversation_id, owner=owner).first() if _is_uuid(
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


# --- schedules ------------------------------------------------------------------------------------------
SCHEDULER_NAME = "chatter-schedules"


def _schedule_errors(*, cron, timezone_name, run_input) -> list[dict]:
    errors = []
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        errors.append({"path": "cron", "code": "invalid_cron",
                       "message": f"{cron!r} is not a cron expression of 5 fields (minute hour day month weekday)"})
    try:
        ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        errors.append({"path": "timezone", "code": "invalid_timezone",
                       "message": f"{timezone_name!r} is not an IANA time zone (e.g. Europe/Paris)"})
    if not isinstance(run_input, dict) or not isinstance(run_input.get("variables", {}), dict):
        errors.append({"path": "input", "code": "invalid_type",
                       "message": 'input must be an object like {"message": "...", "variables": {...}}'})
    return errors


def schedule_next_run(*, cron: str, timezone_name: str, after: datetime) -> datetime:
    """The next time the cron fires after `after`, read in the schedule's own time zone (DST included)."""
    local = after.astimezone(ZoneInfo(timezone_name))
    return croniter(cron, local).get_next(datetime).astimezone(dt_timezone.utc)


def _schedule_validate(*, owner, schedule: WorkflowSchedule) -> None:
    errors = _schedule_errors(cron=schedule.cron, timezone_name=schedule.timezone, run_input=schedule.input)
    if not schedule.name or not schedule.name.strip():
        errors.append({"path": "name", "code": "required", "message": "name is required"})
    if errors:
        raise InvalidInput("invalid schedule", details=errors)
    params = schedule.template.params if schedule.template_id else (schedule.definition.metadata or {}).get("config")
    config = config_resolve(params, schedule.config)
    graph = schedule.template.graph if schedule.template_id else {
        "nodes": schedule.definition.nodes, "edges": schedule.definition.edges}
    _models_check(parse_graph(graph), config)


def schedule_create(*, owner, name: str, cron: str, timezone_name: str = "UTC", template: str | None = None,
                    definition_id=None, run_input: dict | None = None, config: dict | None = None,
                    enabled: bool = True) -> WorkflowSchedule:
    """A workflow run on a cron. Bad cron, time zone, source or config raise InvalidInput before any row."""
    if (template is None) == (definition_id is None):
        raise InvalidInput("give exactly one of template, definition_id")
    schedule = WorkflowSchedule(
        owner=owner, name=(name or "")[:255], cron=cron, timezone=timezone_name, enabled=enabled,
        input=run_input if run_input is not None else {}, config=config or {},
        template=_visible_template(owner=owner, key_or_id=template) if template is not None else None,
        definition=_visible_definition(owner=owner, definition_id=definition_id) if definition_id else None,
    )
    _schedule_validate(owner=owner, schedule=schedule)
    schedule.next_run_at = schedule_next_run(cron=cron, timezone_name=timezone_name, after=timezone.now()) \
        if enabled else None
    with transaction.atomic():
        schedule.save()
        audit_record(action="schedule.created", actor=owner, target=schedule, data=_schedule_summary(schedule))
    return schedule


SCHEDULE_EDITABLE = ("name", "cron", "timezone", "input", "config", "enabled")


def schedule_update(*, schedule: WorkflowSchedule, **changes) -> WorkflowSchedule:
    """Change the editable fields (named as on the model); what the schedule runs is fixed at creation."""
    fixed = sorted(set(changes) - set(SCHEDULE_EDITABLE))
    if fixed:
        raise InvalidInput("these schedule fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} is fixed once the schedule exists"}
            for name in fixed])
    with transaction.atomic():
        locked = WorkflowSchedule.objects.select_for_update().get(pk=schedule.pk)
        for field, value in changes.items():
            setattr(locked, field, value)
        _schedule_validate(owner=locked.owner, schedule=locked)
        locked.next_run_at = schedule_next_run(cron=locked.cron, timezone_name=locked.timezone,
                                               after=timezone.now()) if locked.enabled else None
        locked.save()
        audit_record(action="schedule.updated", actor=locked.owner, target=locked,
                     data={**_schedule_summary(locked), "fields": sorted(changes)})
    return locked


def schedule_delete(*, schedule: WorkflowSchedule) -> None:
    """Remove a schedule; its past executions stay (their `schedule` becomes null)."""
    with transaction.atomic():
        audit_record(action="schedule.deleted", actor=schedule.owner, target=schedule,
                     data=_schedule_summary(schedule))
        WorkflowSchedule.objects.filter(pk=schedule.pk).delete()


def _schedule_summary(schedule: WorkflowSchedule) -> dict:
    return {"name": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone, "enabled": schedule.enabled,
            "template": schedule.template.key if schedule.template_id else None,
            "definition_id": schedule.definition_id}


def scheduler_ensure() -> None:
    """The django-q2 schedules of the system, each kept by name (idempotent: no duplicates on restart or
    re-migrate): due WorkflowSchedules every minute, the recovery sweep every CHATTER_SWEEP_INTERVAL_S
    (whole minutes: django-q2's granularity), the aggregate reconciliation hourly, event pruning daily."""
    from django_q.models import Schedule

    every_minutes = {"schedule_type": Schedule.MINUTES, "repeats": -1}
    schedules = {
        SCHEDULER_NAME: {"func": "workflows.tasks.schedules_run_due_task", **every_minutes, "minutes": 1},
        SWEEP_SCHEDULE_NAME: {"func": "workflows.tasks.execution_sweep_task", **every_minutes,
                              "minutes": max(1, math.ceil(settings.CHATTER_SWEEP_INTERVAL_S / 60))},
        RECONCILE_SCHEDULE_NAME: {"func": "workflows.tasks.aggregates_reconcile_task",
                                  "schedule_type": Schedule.HOURLY, "repeats": -1},
        PRUNE_SCHEDULE_NAME: {"func": "workflows.tasks.events_prune_task", "schedule_type": Schedule.DAILY,
                              "repeats": -1},
    }
    for name, defaults in schedules.items():
        Schedule.objects.update_or_create(name=name, defaults=defaults)


def schedules_run_due(*, now: datetime | None = None) -> list[WorkflowExecution]:
    """Start a `scheduled` execution for every enabled schedule that is due, owned by the schedule's owner.
    Each schedule is claimed by moving its next_run_at, so two workers never start the same tick."""
    now = now or timezone.now()
    started = []
    for schedule in WorkflowSchedule.objects.filter(enabled=True, next_run_at__lte=now).select_related(
            "owner", "template", "definition"):
        following = schedule_next_run(cron=schedule.cron, timezone_name=schedule.timezone, after=now)
        claimed = WorkflowSchedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(
            next_run_at=following, last_run_at=now)
        if not claimed:
            continue
        try:
            execution = execution_create(
                owner=schedule.owner, mode=WorkflowExecution.Mode.SCHEDULED, schedule=schedule,
                template=schedule.template.key if schedule.template_id else None,
                definition_id=schedule.definition_id, message=schedule.input.get("message"),
                variables=schedule.input.get("variables"), config=schedule.config,
            )
        except ChatterError:
            logger.exception("schedule %s could not start its run", schedule.pk)
            continue
        WorkflowSchedule.objects.filter(pk=schedule.pk).update(last_execution=execution)
        started.append(execution)
    return started


# --- recovery and retention -----------------------------------------------------------------------------
SWEEP_SCHEDULE_NAME = "chatter-sweep-executions"
RECONCILE_SCHEDULE_NAME = "chatter-reconcile-aggregates"
PRUNE_SCHEDULE_NAME = "chatter-prune-events"
# A running run's process refreshes its heartbeat every HEARTBEAT_S; several missed beats mean it is gone.
HEARTBEAT_LOST_S = 6 * HEARTBEAT_S
# Past its timeout a live run ends itself at its next token or node boundary; this is the slack it gets.
SWEEP_GRACE_S = 10


def _sweep_reason(execution: WorkflowExecution, *, now: datetime) -> str | None:
    """Why the sweep must end this pending or running run, or None while it may still be alive."""
    timeout_s = execution.config.get("timeout_s") or settings.CHATTER_EXECUTION_TIMEOUT_S
    deadline = timedelta(seconds=timeout_s + SWEEP_GRACE_S)
    if execution.status == Status.PENDING:
        if execution.created_at + deadline < now:
            return f"it did not start within its timeout ({timeout_s} s)"
        return None
    started = execution.started_at or execution.created_at
    if started + deadline < now:
        return f"it ran past its timeout ({timeout_s} s)"
    beat = execution.heartbeat_at or started
    if beat + timedelta(seconds=HEARTBEAT_LOST_S) < now:
        return f"its worker stopped (no heartbeat for {int((now - beat).total_seconds())} s)"
    return None


def execution_interrupt(*, execution: WorkflowExecution, reason: str) -> WorkflowExecution | None:
    """End a pending or running run from outside its process as `failed` / `interrupted`, through
    execution_finish: the usage its ledger holds stays on the execution, its nodes and (for a chat turn) an
    assistant message carrying the last text known and the error (I5); nodes left running fail; the terminal
    event comes last (I6). None when the run had already ended."""
    return execution_end_from_ledger(execution_id=execution.pk,
                                     error=RunInterrupted(f"the run was interrupted: {reason}"))


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


def _runs_in_progress():
    return WorkflowExecution.objects.filter(status__in=(Status.PENDING, Status.RUNNING)).order_by(
        "created_at").only("id", "status", "config", "created_at", "started_at", "heartbeat_at")


def execution_overdue_count(*, now: datetime | None = None) -> int:
    """Runs the sweep should have ended at least one sweep interval ago (I4 says: none). /health reports it."""
    then = (now or timezone.now()) - timedelta(seconds=settings.CHATTER_SWEEP_INTERVAL_S)
    return sum(1 for execution in _runs_in_progress() if _sweep_reason(execution, now=then) is not None)


def execution_sweep(*, now: datetime | None = None) -> list[WorkflowExecution]:
    """The recovery sweep (SPEC §5, I4): every run pending or running past its timeout (plus a grace), and
    every running run whose process stopped beating (its worker died), ends `failed` / `interrupted`.
    Returns the runs it ended; one that cannot be ended now is logged and left for the next sweep."""
    now = now or timezone.now()
    ended = []
    for execution in _runs_in_progress():
        reason = _sweep_reason(execution, now=now)
        if reason is None:
            continue
        try:
            interrupted = execution_interrupt(execution=execution, reason=reason)
        except Exception:  # noqa: BLE001 - one run that cannot be ended must not stop the sweep
            logger.exception("the sweep could not end execution %s", execution.pk)
            continue
        if interrupted is not None:
            logger.warning("execution %s interrupted: %s", execution.pk, reason)
            ended.append(interrupted)
    return ended


def events_prune(*, older_than_days: int | None = None, batch_size: int = 1000,
                 now: datetime | None = None) -> int:
    """Delete the persisted event logs of runs that finished more than `older_than_days` ago (default
    CHATTER_EVENT_RETENTION_DAYS), `batch_size` rows per transaction. A log goes whole (the runs kept have
    gapless logs, I6); running runs are never touched; totals, nodes, messages, the LLM call ledger and
    every aggregate stay as they are. Returns the number of events deleted."""
    days = settings.CHATTER_EVENT_RETENTION_DAYS if older_than_days is None else older_than_days
    if days < 0 or batch_size < 1:
        raise InvalidInput("older_than_days must be >= 0 and batch_size >= 1")
    cutoff = (now or timezone.now()) - timedelta(days=days)
    expired = ExecutionEvent.objects.filter(
        execution__status__in=WorkflowExecution.TERMINAL, execution__completed_at__lt=cutoff)
    deleted = 0
    while batch := list(expired.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            deleted += ExecutionEvent.objects.filter(pk__in=batch).delete()[0]
    return deleted
