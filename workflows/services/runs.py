"""Starting runs (docs/architecture.md#the-run-path): every request to run something is validated into a plan, written
in one transaction, and handed to the runner (workflows.runner), which runs it here (sync), on its threads (stream) or
leaves it to a worker (background, scheduled). Views and commands call these and nothing else of the run path."""
from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import AsyncIterator, Callable, Iterator

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from langchain_core.messages import HumanMessage, SystemMessage

from audit.services import audit_record
from budgets.models import Budget
from budgets.services import BudgetRefused, Worst, budget_reserve, budgets_matching, worst_case
from conversations.models import Message
from conversations.services import MAX_MESSAGE_CHARS, conversation_create, conversation_get_for_update, message_save
from core.cache import hot_reads
from core.correlation import current_correlation_id
from core.db import retried_on_conflict, statements_run, write_atomic
from core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RunCancelled,
    TooManyRuns,
)
from core.tracing import run_trace_context, tracing_on
from engine.chat_messages import messages_from_openai
from engine.config import config_resolve
from engine.graph import Graph, parse_graph
from engine.python_graphs import registered_graph_name
from engine.providers import provider_check
from engine.usage import estimate_input_tokens, estimate_prompt_tokens, estimate_rerank_tokens
from webhooks.services import webhook_url_check
from workflows import runner
from workflows.cancels import cancel_signal_local
from workflows.ending import end_from_ledger
from workflows.models import Checkpoint, WorkflowDefinition, WorkflowExecution, WorkflowTemplate
from workflows.pricing import price_for_call, unpriced_model_message
from workflows.hub import TERMINAL_EVENTS, Subscription
from workflows.realtime import execution_feed, execution_subscribe, feed_blocking, feed_until_paused
from workflows.services.definitions import visible_definition
from workflows.services.queue import execution_enqueue, execution_enqueue_at
from workflows.services.run_requests import RunRequest
from workflows.services.templates import graph_prompts_check, is_uuid, visible_template
from workflows.signals import execution_writing
from workflows.statements import (
    execution_insert_limited_at_commit,
    execution_insert_within_limit,
    runs_limit_refused,
)
from workflows.writer import NotCreated

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status
Mode = WorkflowExecution.Mode
_MODES = frozenset(Mode.values)


def models_check(graph: Graph, config: dict, *, read: dict | None = None) -> dict:
    """Every provider/model the run may call must exist and be priced, or we could not account for it. Returns the
    prices read, by (provider, model): the run prices its calls with them. `read`: prices its caller has just read
    (the gateway, resolving the model asked for), not read again."""
    pairs = {(config["provider"], config["model"])}
    for node in graph.nodes:
        if node.type == "model" and (node.config.get("provider") or node.config.get("model")):
            provider = node.config.get("provider") or config["provider"]
            model = node.config.get("model") or (
                config["model"] if provider == config["provider"] else settings.CHATTER_PROVIDER_DEFAULT_MODELS[provider]
            )
            pairs.add((provider, model))
    prices = {}
    for provider, model in sorted(pairs):
        provider_check(provider, model=model)
        known = (read or {}).get((provider, model))
        prices[(provider, model)] = known if known is not None else price_for_call(provider=provider, model=model)
        if prices[(provider, model)] is None:
            raise InvalidInput(
                f"unknown model {model!r} for provider {provider!r} (no price configured); "
                f"{unpriced_model_message(provider=provider)}",
                details=[{"path": "config.model", "code": "unknown_model",
                          "message": f"{provider}/{model} has no ModelPrice row; add one to use it"}],
            )
    return prices


@dataclass
class RunPlan:
    """A validated request to run something: all that is needed to write it, nothing written yet. What the request
    says as it is (its schedule, key, webhook, rows of the caller's own, the Agent Server's graph request, the
    gateway's messages) is read from `request`."""

    request: RunRequest
    owner: object
    mode: str
    workflow_type: str
    graph: Graph
    config: dict
    message: str | None
    variables: dict
    conversation_id: object = None
    chat: bool = False
    template: WorkflowTemplate | None = None
    definition: WorkflowDefinition | None = None
    api_key: object = None  # the ApiToken the request authenticated with (a fork's plan has none)
    prices: dict = field(default_factory=dict)
    execution_id: uuid.UUID = field(default_factory=uuid.uuid4)
    forked_from: WorkflowExecution | None = None
    from_checkpoint: str = ""
    run_after: datetime | None = None  # a delayed background run: handed to the workers then (services.queue)
    budgets: list | None = None  # the budgets it falls under, once read (plan_budgets)


def run_plan(request: RunRequest, *, mode: str | None = None) -> RunPlan:
    """Validate a run request of any entry point (reads only; `mode`: the service's, over the request's). Bad input
    raises here, before anything is written."""
    owner, mode = request.owner, mode or request.mode
    template, definition_id, graph = request.template, request.definition_id, request.graph
    message, variables, after_seconds = request.message, request.variables, request.after_seconds
    if mode not in _MODES:
        raise InvalidInput(f"unknown mode {mode!r}")
    if request.webhook:
        webhook_url_check(url=request.webhook, path="webhook")
    if after_seconds is not None and (mode != Mode.BACKGROUND or not isinstance(after_seconds, int)
                                      or isinstance(after_seconds, bool) or after_seconds < 0):
        raise InvalidInput("after_seconds delays a background run by a whole number of seconds (0 or more)")
    run_after = timezone.now() + timedelta(seconds=after_seconds) if after_seconds else None
    if request.from_checkpoint is not None:
        return replace(fork_plan(request, mode=mode), run_after=run_after)
    if request.chat and not template and not definition_id and graph is None:
        template = "universal_chat"
    if len([s for s in (template, definition_id, graph) if s is not None]) != 1:
        raise InvalidInput("give exactly one of template, definition_id, graph")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS):
        raise InvalidInput(f"message must be text of at most {MAX_MESSAGE_CHARS} characters")
    if request.chat and not (message or "").strip():
        raise InvalidInput("a chat turn needs a message", details=[{"path": "message", "code": "required",
                                                                    "message": "message is required"}])
    if variables is not None and not isinstance(variables, dict):
        raise InvalidInput("variables must be an object")
    conversation_id = request.conversation_id
    if conversation_id is not None and not is_uuid(conversation_id):
        raise NotFound("conversation not found")

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
    graph_prompts_check(parsed, owner=owner)
    resolved = config_resolve(params, request.config)
    prices = models_check(parsed, resolved, read=request.prices_read)
    if request.gateway:
        workflow_type = WorkflowExecution.Type.GATEWAY
    return RunPlan(request=request, owner=owner, mode=mode, workflow_type="chat" if request.chat else workflow_type,
                   graph=parsed, config=resolved, message=message, variables=variables or {},
                   conversation_id=conversation_id, chat=request.chat, template=template_row, definition=definition,
                   api_key=request.api_key, prices=prices, run_after=run_after)


def plan_budgets(plan: RunPlan) -> list:
    """The budgets the run falls under, in one order for every run's locks of their periods (read once a plan)."""
    if plan.budgets is None:
        budgets = budgets_matching(owner=plan.owner, api_key=plan.api_key,
                                   template_id=plan.template.pk if plan.template else None)
        plan.budgets = sorted(budgets, key=lambda budget: str(budget.pk))
    return plan.budgets


def fork_plan(request: RunRequest, *, mode: str) -> RunPlan:
    """Time travel: a new run of a past run's graph that goes on from one of its checkpoints (workflows.runner
    copies it into the new run's own thread), linked to it, with accounting of its own; outside any conversation,
    so the original run and its conversation stay as they are. Another user's checkpoint is a 404."""
    if mode not in _MODES:
        raise InvalidInput(f"unknown mode {mode!r}")
    owner = request.owner
    row = Checkpoint.objects.filter(kind=Checkpoint.Kind.CHECKPOINT, checkpoint_id=str(request.from_checkpoint)[:64],
                                    execution__owner=owner).select_related("execution__template",
                                                                           "execution__definition").first()
    if row is None:
        raise NotFound("checkpoint not found")
    parent = row.execution
    graph = parse_graph(parent.graph)
    return RunPlan(request=request, owner=owner, mode=mode, workflow_type=parent.workflow_type, graph=graph,
                   config=parent.config, message=parent.input_data.get("message"),
                   variables=parent.input_data.get("variables") or {}, template=parent.template,
                   definition=parent.definition,
                   prices=models_check(graph, parent.config), forked_from=parent, from_checkpoint=row.checkpoint_id)


def run_row(plan: RunPlan, *, status: str) -> WorkflowExecution:
    """The run's row as run_write writes it (`running`: started now), not written yet."""
    now = timezone.now()
    trace_id, trace_context = run_trace_context(execution_id=plan.execution_id, schedule=plan.request.schedule)
    execution = WorkflowExecution(
        id=plan.execution_id, owner=plan.owner, workflow_type=plan.workflow_type, template=plan.template,
        definition=plan.definition, definition_version=plan.definition.version if plan.definition else None,
        schedule=plan.request.schedule, mode=plan.mode, provider=plan.config["provider"], model=plan.config["model"],
        config=plan.config, graph=plan.graph.as_dict(), status=status,
        input_data={"message": plan.message, "variables": plan.variables,
                    **({"messages": plan.request.messages} if plan.request.messages else {}),
                    **(plan.request.graph_request or {})},
        api_key=plan.api_key,
        correlation_id=current_correlation_id() or uuid.uuid4().hex,
        trace_id=trace_id, trace_context=trace_context,
        forked_from=plan.forked_from, forked_from_checkpoint=plan.from_checkpoint,
        webhook=plan.request.webhook, run_after=plan.run_after,
        **({"started_at": now, "heartbeat_at": now} if status == Status.RUNNING else {}),
    )
    execution_writing.send(sender=WorkflowExecution, execution=execution, models=sorted(plan.prices),
                           admitted=plan.request.gateway)
    return execution


def run_write(plan: RunPlan, *, status: str, enqueue: bool = True,
              row: WorkflowExecution | None = None, inserted_as_ended: bool = False,
              starting: Callable[[WorkflowExecution], None] | None = None) -> tuple[WorkflowExecution, Message | None]:
    """Write the run (`pending`, or `running` when this process runs it at once: created already claimed), with
    its conversation's user message, in one transaction, locking in the one order (core.db): the
    conversation, the budgets' periods, the owner (on PostgreSQL at the commit, where the owner's limit of runs
    in progress is checked: workflows.statements.EXECUTION_INSERT_LIMITED_AT_COMMIT). Another user's
    conversation is a 404 and too many runs in progress a 429; either way nothing is written. `enqueue=False`: a
    background run waits, pending, for whoever holds it back to enqueue it (a LangGraph run queued behind its
    thread's run). `row`: the run's row made by run_row at its start, written now with its end (by the plan's
    `on_written`, in this transaction): never seen in progress, so not counted by the limit of runs in progress.
    `inserted_as_ended`: `row` is inserted by `on_written` as it ends (execution_finish(insert=True)), not here.
    `starting`: called once with the run's row before it is written (a runner starting it meanwhile)."""
    execution = row if row is not None else run_row(plan, status=status)
    if starting is not None:
        starting(execution)
    return _run_written(plan, execution, status=status, enqueue=enqueue, counted=row is None,
                        inserted_as_ended=inserted_as_ended)


def _writes_only_new_rows(plan: RunPlan) -> bool:
    """On PostgreSQL, outside any transaction: a run with no conversation of its own yet and no budget over it,
    whose creation inserts rows and locks none (no conversation's row to count a message on, no budget's period)."""
    return (connection.vendor == "postgresql" and not connection.in_atomic_block and plan.conversation_id is None
            and plan.request.on_written is None and not plan_budgets(plan))


@retried_on_conflict
def _run_written(plan: RunPlan, execution: WorkflowExecution, *, status: str, enqueue: bool, counted: bool,
                 inserted_as_ended: bool) -> tuple[WorkflowExecution, Message | None]:
    user_message = None
    check_now = connection.in_atomic_block  # a caller's transaction, which commits later: the limit is checked now
    # Such a run is one statement, which commits by itself: its row rides on its new conversation's statement
    # (core.db.statements_run), and its owner's limit is checked as that commits. One round trip where BEGIN,
    # two statements and COMMIT were four (bench/RESULTS.md, B2).
    one_statement = counted and _writes_only_new_rows(plan)
    try:
        with _limit_refusal_is_too_many_runs(), write_atomic(one_statement=one_statement):
            conversation_id, opening = plan.conversation_id, None
            if conversation_id is None and plan.chat:  # a new conversation, opened by the turn's message
                opening = conversation_create(owner=plan.owner, title=plan.message.strip()[:60], written=False)
                conversation_id = opening.pk
            execution.conversation_id = conversation_id
            riding = [execution_insert_limited_at_commit(execution, limit=settings.CHATTER_MAX_CONCURRENT_RUNS)] \
                if one_statement else []
            if conversation_id is not None and plan.message:
                user_message = message_save(
                    conversation_id=conversation_id, opening=opening, owner=plan.owner, role=Message.Role.USER,
                    content=plan.message, execution=execution, provider_used=plan.config["provider"],
                    model_used=plan.config["model"], actor=plan.owner, riding=riding)
                if "graph_id" in (user_message.conversation.metadata or {}):
                    # A thread of the Agent Server API (stamped by its runs) keeps its graph's state: a turn from
                    # elsewhere (the gateway's too: its messages are the turn) goes on from it (read from the row
                    # the message's statement returned).
                    execution.input_data["on_thread"] = True
            elif conversation_id is not None and conversation_get_for_update(
                    conversation_id=conversation_id).owner_id != plan.owner.pk:
                # Locked as a turn's message locks it: runs created on one conversation take turns, so each one's
                # on_written sees the others (agent_server.runs: one run at a time on a thread).
                raise NotFound("conversation not found")
            budgets = plan_budgets(plan)
            if budgets:  # before the run's row: its reservations (and bounded max_tokens) are written with it
                execution.budget_holds = budget_reserve(budgets=budgets, worst=_first_call_worst_case(plan, budgets))
            limit = settings.CHATTER_MAX_CONCURRENT_RUNS if counted else None
            if one_statement:
                if user_message is None:  # no message for it to ride on: the run's row alone
                    statements_run(riding[0])
            elif not inserted_as_ended and not execution_insert_within_limit(execution, limit=limit,
                                                                             check_now=check_now):
                raise _too_many_runs()
            if plan.request.on_written is not None:
                plan.request.on_written(execution)
            if enqueue and plan.run_after is not None:
                transaction.on_commit(lambda: execution_enqueue_at(execution_id=execution.pk, at=plan.run_after))
            elif enqueue and plan.mode in (Mode.BACKGROUND, Mode.SCHEDULED):
                # Only a committed execution may reach a worker: the task would not find it otherwise.
                transaction.on_commit(lambda: execution_enqueue(execution_id=execution.pk))
    except TooManyRuns:
        audit_record(action="limit.exceeded", actor=plan.owner, data={
            "limit": "max_concurrent_runs", "value": settings.CHATTER_MAX_CONCURRENT_RUNS})
        raise
    except BudgetRefused as refused:
        audit_record(action="limit.exceeded", actor=plan.owner, correlation_id=execution.correlation_id, data={
            "limit": "budget", "value": refused.details[0]["message"], "workflow_type": plan.workflow_type,
            "api_key": str(plan.api_key.uid) if plan.api_key is not None else None})
        raise
    return execution, user_message


def _too_many_runs() -> TooManyRuns:
    return TooManyRuns(f"at most {settings.CHATTER_MAX_CONCURRENT_RUNS} runs at once per user")


@contextmanager
def _limit_refusal_is_too_many_runs() -> Iterator[None]:
    """PostgreSQL refuses a run over its owner's limit at its creation's commit (or check): a TooManyRuns."""
    try:
        yield
    except IntegrityError as exc:
        if not runs_limit_refused(exc):
            raise
        raise _too_many_runs() from None


def _first_call_worst_case(plan: RunPlan, budgets: list) -> Worst:
    """What the run's first call can cost at most, from its input alone (a longer prompt, with history, is
    reserved for as the call starts: ExecutionRecorder.model_call_started). A call's completion is part of it, so
    under a hard budget a run that sets no max_tokens gets CHATTER_BUDGET_DEFAULT_MAX_TOKENS (written with it);
    an embeddings or a rerank run completes nothing: its worst case is the texts it reads."""
    price = plan.prices.get((plan.config["provider"], plan.config["model"]))
    if plan.graph.reads_only:  # what it reads: the variables `input` (embeddings), `query` and `documents` (rerank)
        inputs, query, documents = (plan.variables.get(name) for name in ("input", "query", "documents"))
        documents = [text for text in documents if isinstance(text, str)] if isinstance(documents, list) else []
        return worst_case(prompt_tokens=estimate_input_tokens(inputs if isinstance(inputs, list) else []) +
                          estimate_rerank_tokens(query if isinstance(query, str) else "", documents),
                          max_tokens=0, price=price)
    if plan.config["max_tokens"] is None and any(budget.mode == Budget.Mode.HARD for budget in budgets):
        plan.config["max_tokens"] = settings.CHATTER_BUDGET_DEFAULT_MAX_TOKENS
    if plan.request.messages:
        prompt = messages_from_openai(plan.request.messages)
    else:
        prompt = [HumanMessage(plan.message or ""), *([SystemMessage(plan.config["system_prompt"])]
                                                       if plan.config.get("system_prompt") else [])]
    # (soft budgets reserve nothing)
    return worst_case(prompt_tokens=estimate_prompt_tokens(prompt), max_tokens=plan.config["max_tokens"] or 0,
                      price=price, choices=(plan.config.get("model_params") or {}).get("n") or 1)


def execution_create(request: RunRequest) -> WorkflowExecution:
    """Validate a run request and write it `pending` (a worker runs background and scheduled runs; a pending run
    is also what execution_run runs). Bad input raises before any row exists."""
    return run_write(run_plan(request), status=Status.PENDING)[0]


def execution_run_now(request: RunRequest) -> WorkflowExecution:
    """A sync run: written already running and run to its end in this thread. Returns the ended run. Outside a
    request (a command, a benchmark), its hot reads read their version once, as a request's do."""
    with hot_reads.scope():
        plan = run_plan(request, mode=Mode.SYNC)
        execution, user_message = run_write(plan, status=Status.RUNNING)
        return runner.run(runner.RunStart(execution=execution, user_message=user_message, prices=plan.prices,
                                          graph=plan.graph))


def execution_start_streamed(request: RunRequest) -> tuple[WorkflowExecution, AsyncIterator[dict]]:
    """A streamed run: written already running, run on the runner's threads, and its feed (listening since before
    it started, so it reads nothing back from the database). Nobody has to read the feed: the run goes on.

    On PostgreSQL a run that writes only new rows starts on its thread before it is written: its graph sets up
    while this request writes it, and its first node waits for that write (RunStart.created), so it reads, writes,
    publishes and calls nothing before it is written, and ends with nothing written if the write is refused
    (bench/RESULTS.md, B2)."""
    execution, subscription = _started_streamed(request)
    return execution, feed_until_paused(execution_feed(execution.pk, subscription=subscription))


def execution_start_answered(request: RunRequest) -> tuple[WorkflowExecution, AsyncIterator[dict] | None]:
    """A streamed run whose caller answers a failure before the reply's first word with a status of its own (the
    gateway: OpenAI's clients retry a 429, and wait out its Retry-After, only when it is the response's status):
    started as execution_start_streamed starts one, then this thread waits until the run says the first word of
    its reply (a token, a tool call's fragment) or ends, at most the run's own time limit. A run that failed before
    a word: the run as it ended, and no feed."""
    execution, subscription = _started_streamed(request)
    first = subscription.wait_for(_said_or_ended, timeout=settings.CHATTER_EXECUTION_TIMEOUT_S + 5)
    if first is not None and first["event"] in ("workflow_failed", "workflow_cancelled"):
        subscription.close()
        execution.refresh_from_db()
        return execution, None
    return execution, feed_until_paused(execution_feed(execution.pk, subscription=subscription))


REPLY_EVENTS = ("token", "tool_call_delta")


def _said_or_ended(envelope: dict) -> bool:
    return envelope["event"] in REPLY_EVENTS or envelope["event"] in TERMINAL_EVENTS


def _started_streamed(request: RunRequest) -> tuple[WorkflowExecution, Subscription]:
    plan = run_plan(request, mode=Mode.STREAM)
    subscription = execution_subscribe(plan.execution_id, remote=False)
    created = Future() if _starts_while_written(plan) else None

    def starting(execution: WorkflowExecution) -> None:
        runner.submit(runner.RunStart(execution=execution, prices=plan.prices, graph=plan.graph, created=created))

    try:
        execution, user_message = run_write(plan, status=Status.RUNNING, starting=starting if created else None)
    except BaseException:
        if created is not None:
            created.set_exception(NotCreated())
        subscription.close()
        raise
    if created is not None:
        created.set_result(user_message)
    else:
        runner.submit(runner.RunStart(execution=execution, user_message=user_message, prices=plan.prices,
                                      graph=plan.graph))
    return execution, subscription


def _starts_while_written(plan: RunPlan) -> bool:
    """Whether a streamed run's thread may start before its row is written: one that writes only new rows, on
    PostgreSQL, where the write waits on another process (SQLite's runs in this one, on the CPU the graph would
    take turns with: slower), runs a graph of nodes (not a registered Python graph) and is not traced (its spans
    read its conversation as they start)."""
    return _writes_only_new_rows(plan) and registered_graph_name(plan.graph) is None and not tracing_on()


def waiting_run_input_set(*, execution_id, input_data: dict) -> bool:
    """Replace the input of a run that waits (what it goes on with when it is resumed: its breakpoints, its
    stream's modes); whether it still waited."""
    return WorkflowExecution.objects.filter(pk=execution_id, status=Status.WAITING).update(
        input_data=input_data) == 1


def _pending_claim(execution_id) -> runner.RunStart | None:
    """Claim a pending run for this process (one caller wins): how it goes on (from its input; with the answers it
    was given in background mode, workflows.services.waiting; from its last checkpoint after the sweep queued it
    again when its worker died), or None when another caller claimed it."""
    started_at = timezone.now()
    claimed = WorkflowExecution.objects.filter(pk=execution_id, status=Status.PENDING, cancel_requested=False).update(
        status=Status.RUNNING, started_at=started_at, heartbeat_at=started_at)
    if not claimed:
        return None
    execution = WorkflowExecution.objects.select_related("template", "owner").get(pk=execution_id)
    user_message = Message.objects.filter(execution_id=execution_id, role=Message.Role.USER).first() \
        if execution.conversation_id and execution.input_data.get("message") else None
    answers = (execution.output_data or {}).get("answers")
    return runner.RunStart(execution=execution, user_message=user_message, resume=answers,
                           after_crash=answers is None and execution.resume_attempts > 0)


def execution_run(*, execution_id) -> WorkflowExecution:
    """Run a pending execution to a terminal state (a worker's task). Safe to call twice: one caller claims it."""
    start = _pending_claim(execution_id)
    return WorkflowExecution.objects.get(pk=execution_id) if start is None else runner.run(start)


def execution_stream(*, execution_id) -> Iterator[dict]:
    """Claim a pending execution, run it on the runner's threads, and yield its events (tokens included) as they
    happen, from the same feed as every other reader. A reader that stops never stops or fails the run."""
    subscription = execution_subscribe(execution_id, remote=False)
    start = _pending_claim(execution_id)
    if start is not None:
        runner.submit(start)
    else:
        subscription.close()
    yield from feed_blocking(execution_feed(execution_id, subscription=subscription if start else None))


def execution_cancel(*, execution: WorkflowExecution, actor=None) -> WorkflowExecution:
    """Cancel a pending run at once, or ask a running one to stop at its next token or node boundary."""
    if execution.is_terminal:
        raise Conflict(f"the run is already {execution.status}", code="not_cancellable")
    audit_record(action="execution.cancel_requested", actor=actor, target=execution,
                 correlation_id=execution.correlation_id, data={"status": execution.status})
    if execution.status in (Status.PENDING, Status.WAITING):  # no process runs it: it ends here
        reason = "cancelled before it started" if execution.status == Status.PENDING else "cancelled while waiting"
        ended = end_from_ledger(execution_id=execution.pk, error=RunCancelled(reason),
                                from_statuses=(execution.status,))
        if ended is not None:
            return ended
    WorkflowExecution.objects.filter(pk=execution.pk).update(cancel_requested=True)
    cancel_signal_local(execution.pk)
    execution.refresh_from_db()
    return execution
