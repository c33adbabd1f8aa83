"""Writes of analytics: usage rollups, reconciling stored aggregates with their source rows, and re-pricing past
calls (prices themselves: analytics.prices)."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Case, F, Q, Sum, Value, When

from analytics.budget_spend import budget_spend_drift, budget_spend_fix
from analytics.models import TemplateAnalytics, UsageRollup
from analytics.selectors import (
    TEMPLATE_COUNTERS,
    TEMPLATE_MOMENTS,
    price_for_call,
    template_analytics_from_executions,
    usage_day,
    usage_dimensions,
    usage_from_source,
    usage_stored,
    usage_zero,
)
from analytics.statements import template_analytics_add, usage_rollups_add
from conversations.models import Conversation, Message
from conversations.selectors import conversation_totals_from_messages
from conversations.services import conversation_get_for_update
from core.db import retried_on_conflict, statements_run
from core.errors import Conflict
from core.schedules import schedule_keep
from engine.usage import Usage, cost_for_usage
from experiments.selectors import experiment_results_from_runs
from experiments.services import experiment_results_fix
from workflows.ledger import MCP_ANSWERED
from workflows.models import LLMCall, NodeExecution, ToolCall, WorkflowExecution
from workflows.pricing import tool_price_for_call
from workflows.selectors import CALL_FIGURES
from workflows.services.costs import llm_call_cost_adjust, llm_call_unpriced_mark, tool_call_cost_adjust

logger = logging.getLogger(__name__)
RECONCILE_SCHEDULE_NAME = "chatter-reconcile-aggregates"
MONEY_PLACES = Decimal("0.00000001")


def _money(value):
    """A sum of money to its stored 8 places: SQLite sums decimals as floats (100 × 0.0000075 comes back
    0.000750000000000001); a sum of 8-place amounts has 8 places, so rounding only removes that noise."""
    return value.quantize(MONEY_PLACES) if isinstance(value, Decimal) else value


def _diff(stored: dict | None, actual: dict) -> dict:
    actual = {key: _money(value) for key, value in actual.items()}
    if stored is None:
        return {key: (None, value) for key, value in actual.items()}
    return {key: (stored[key], value) for key, value in actual.items() if stored[key] != value}


def aggregates_drift() -> list[dict]:
    """Every stored aggregate that differs from the sum of its source rows (I1 conversations, I2 templates,
    I3 executions), all read in one consistent snapshot: writers committing meanwhile are wholly in it or wholly
    out of it, so runs in progress never look like drift (REPEATABLE READ on PostgreSQL; SQLite's transaction is
    one snapshot already)."""
    outermost = not connection.in_atomic_block  # inside a caller's transaction, its snapshot rules
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return _aggregates_drift()


def _aggregates_drift() -> list[dict]:
    drift = []
    for pk, row in conversation_totals_from_messages().items():
        if fields := _diff(row["stored"], row["actual"]):
            drift.append({"kind": "conversation", "id": str(pk), "fields": fields})
    for row in template_analytics_from_executions().values():
        if fields := _diff(row["stored"] or _template_zero(), row["actual"]):  # no row yet: it never ran
            drift.append({"kind": "template", "id": row["key"], "fields": fields})
    drift += _execution_drift()
    drift += usage_drift()
    drift += budget_spend_drift()
    for pk, row in experiment_results_from_runs().items():
        if fields := _diff(row["stored"], row["actual"]):
            drift.append({"kind": "experiment_result", "id": str(pk), "fields": fields})
    return drift


def usage_drift() -> list[dict]:
    """Rollup rows that differ from the same figures computed from the source rows (a missing row and a row of
    zeros are the same thing)."""
    stored, actual = usage_stored(), usage_from_source()
    zero = usage_zero()
    drift = []
    for key in sorted(set(stored) | set(actual), key=str):
        row = stored.get(key) or actual[key]
        have = {name: stored.get(key, zero)[name] for name in UsageRollup.COUNTERS}
        want = {name: actual.get(key, zero)[name] for name in UsageRollup.COUNTERS}
        if fields := _diff(have, want):
            drift.append({"kind": "usage", "id": _usage_label(row), "fields": fields})
    return drift


def _execution_drift() -> list[dict]:
    """I3: a finished execution's totals equal the sums over its nodes (and over the messages it produced: a chat
    turn's reply, a registered graph's messages)."""
    drift = []
    finished = WorkflowExecution.objects.filter(status__in=WorkflowExecution.TERMINAL)
    node_sums = {
        row["execution_id"]: row
        for row in NodeExecution.objects.filter(execution__in=finished).values("execution_id").annotate(
            prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), total=Sum("total_tokens"),
            cost_sum=Sum("cost"))
    }
    replies = {
        row["execution_id"]: row
        for row in Message.objects.filter(execution__in=finished).exclude(role=Message.Role.USER).values(
            "execution_id").annotate(prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
                                     total_tokens=Sum("total_tokens"), cost=Sum("cost"))
    }
    for execution in finished.values("id", "prompt_tokens", "completion_tokens", "total_tokens", "cost"):
        nodes = node_sums.get(execution["id"], {})
        actual = {
            "prompt_tokens": nodes.get("prompt") or 0, "completion_tokens": nodes.get("completion") or 0,
            "total_tokens": nodes.get("total") or 0, "cost": nodes.get("cost_sum") or Decimal("0"),
        }
        stored = {key: execution[key] for key in actual}
        if fields := _diff(stored, actual):
            drift.append({"kind": "execution", "id": str(execution["id"]), "fields": fields})
        reply = replies.get(execution["id"])
        if reply is not None:
            if fields := _diff({key: reply[key] for key in actual}, stored):
                drift.append({"kind": "assistant_message", "id": str(execution["id"]), "fields": fields})
    return drift


def aggregates_fix() -> int:
    """Recompute conversation and template aggregates from their source rows, each under its row lock."""
    fixed = 0
    for pk in Conversation.objects.values_list("pk", flat=True):
        with transaction.atomic():
            conversation_get_for_update(conversation_id=pk)
            actual = conversation_totals_from_messages(conversation_ids=[pk])[pk]
            if _diff(actual["stored"], actual["actual"]):
                Conversation.objects.filter(pk=pk).update(**actual["actual"])
                fixed += 1
    with transaction.atomic():
        for pk, row in template_analytics_from_executions().items():
            if _diff(row["stored"] or _template_zero(), row["actual"]):
                _template_analytics_rebuild(template_id=pk)
                fixed += 1
    if usage_drift():
        fixed += usage_rollups_rebuild()
    fixed += budget_spend_fix()
    fixed += experiment_results_fix()
    return fixed


def _template_analytics_rebuild(*, template_id) -> None:
    """A template's slots again, each from the ended runs whose id picks it."""
    slots: dict[int, dict] = {}
    runs = WorkflowExecution.objects.filter(template_id=template_id, status__in=WorkflowExecution.TERMINAL).only(
        "template_id", "status", "execution_time_ms", "prompt_tokens", "completion_tokens", "total_tokens", "cost",
        "completed_at")
    for execution in runs.iterator():
        figures = _template_figures(execution)
        slot = slots.setdefault(TemplateAnalytics.slot_of(execution.pk), {
            **{name: 0 for name in TEMPLATE_COUNTERS}, **{name: None for name in TEMPLATE_MOMENTS}})
        for name in TEMPLATE_COUNTERS:
            slot[name] += figures[name]
        for name in TEMPLATE_MOMENTS:
            if figures[name] is not None and (slot[name] is None or figures[name] > slot[name]):
                slot[name] = figures[name]
    TemplateAnalytics.objects.filter(template_id=template_id).delete()
    for number, figures in sorted(slots.items()):
        _template_analytics_upsert(template_id=template_id, slot=number, figures=figures)


def _template_zero() -> dict:
    return {name: Decimal("0") if name == "total_cost" else 0 for name in TEMPLATE_COUNTERS}


def reconcile_schedule_ensure() -> None:
    """The django-q2 schedule of the hourly reconciliation (analytics.tasks), kept by name (idempotent)."""
    from django_q.models import Schedule

    schedule_keep(RECONCILE_SCHEDULE_NAME, func="analytics.tasks.aggregates_reconcile_task",
                  schedule_type=Schedule.HOURLY, repeats=-1)


@dataclass(frozen=True)
class CostsRecomputed:
    repriced: int  # calls whose cost changed
    unpriced: dict[str, int]  # "provider/model": calls left without a price in force at their time
    tools_repriced: int = 0  # MCP tool calls whose cost changed


@retried_on_conflict
def costs_recompute(*, since: datetime | None = None) -> CostsRecomputed:
    """Re-price past LLM calls with the prices in force at each call's time, by the model each call asked for
    (as runs price them: a server may report another name). Each difference is carried to the node, execution,
    assistant message, conversation and budget periods by their services, and to the template analytics and usage
    rollups by the receivers of usage_repriced. Provider-reported costs stay. A call whose model has no price in
    force keeps its cost (never a silent 0), is flagged `unpriced` and counted in the answer. MCP tool calls that
    answered are re-priced the same way with the per-call price in force at their time (0 where none: a tool is
    free unless priced), counted in `tools_repriced`. All in one transaction: an aggregate that cannot take its
    change (a usage rollup missing, a budget period that drifted) raises Conflict and nothing is re-priced; one
    rolled back as a deadlock's victim (a run ending meanwhile) is tried again."""
    with transaction.atomic():
        return _costs_recompute(since=since)


def _costs_recompute(*, since: datetime | None) -> CostsRecomputed:
    calls = LLMCall.objects.filter(provider_cost=False).order_by("id")
    if since is not None:
        calls = calls.filter(created_at__gte=since)
    changed, unpriced = 0, Counter()
    for call in calls.iterator():
        price = price_for_call(provider=call.provider, model=call.requested_model, at=call.created_at)
        if price is None:
            unpriced[f"{call.provider}/{call.requested_model}"] += 1
            if not call.unpriced:
                llm_call_unpriced_mark(call=call, unpriced=True)
            continue
        if call.unpriced:
            llm_call_unpriced_mark(call=call, unpriced=False)
        usage = Usage(prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                      cached_prompt_tokens=call.cached_prompt_tokens)
        delta = cost_for_usage(usage, price) - call.cost
        if delta and llm_call_cost_adjust(call=call, delta=delta):
            changed += 1
    tool_calls = ToolCall.objects.filter(MCP_ANSWERED).order_by("id")  # a tool unpriced at its time costs 0
    if since is not None:
        tool_calls = tool_calls.filter(created_at__gte=since)
    tools_changed = 0
    for call in tool_calls.iterator():
        delta = tool_price_for_call(tool=call.tool, at=call.created_at) - call.cost
        if delta and tool_call_cost_adjust(call=call, delta=delta):
            tools_changed += 1
    return CostsRecomputed(repriced=changed, unpriced=dict(sorted(unpriced.items())), tools_repriced=tools_changed)


# --- template analytics (I2) ----------------------------------------------------------------------------------
_TEMPLATE_OUTCOME = {
    WorkflowExecution.Status.COMPLETED: ("successful_executions", "last_success_at"),
    WorkflowExecution.Status.FAILED: ("failed_executions", "last_failure_at"),
    WorkflowExecution.Status.CANCELLED: ("cancelled_executions", None),
}


def _template_figures(execution: WorkflowExecution) -> dict | None:
    """What an ended run of a template adds to its template's row (None: the run has no template)."""
    if execution.template_id is None:
        return None
    outcome, moment = _TEMPLATE_OUTCOME[execution.status]
    figures = {
        **{name: 0 for name in TEMPLATE_COUNTERS}, "total_executions": 1, outcome: 1,
        "total_execution_time_ms": execution.execution_time_ms or 0,
        "prompt_tokens": execution.prompt_tokens, "completion_tokens": execution.completion_tokens,
        "total_tokens": execution.total_tokens, "total_cost": execution.cost,
        **{name: None for name in TEMPLATE_MOMENTS}, "last_used_at": execution.completed_at,
    }
    if moment:
        figures[moment] = execution.completed_at
    return figures


def template_analytics_reprice(*, execution: WorkflowExecution, calls: list[dict]) -> None:
    """Carry the cost change of an ended run's re-priced calls to its slot of its template's figures (which holds
    the run's figures since it ended)."""
    if execution.template_id is not None:
        figures = {**{name: 0 for name in TEMPLATE_COUNTERS}, **{name: None for name in TEMPLATE_MOMENTS},
                   "total_cost": sum(call["cost"] for call in calls)}
        _template_analytics_upsert(template_id=execution.template_id, slot=TemplateAnalytics.slot_of(execution.pk),
                                   figures=figures)


def _template_analytics_upsert(*, template_id, slot: int, figures: dict) -> None:
    """The one statement that makes a slot of a template's figures (when the first run picking it ends) or adds
    to it."""
    statements_run(_template_analytics_sql(template_id=template_id, slot=slot, figures=figures))


def _template_analytics_sql(*, template_id, slot: int, figures: dict) -> tuple[str, list]:
    return template_analytics_add({"template_id": template_id, "slot": slot, **figures})


# --- usage rollups (see UsageRollup for what each counter counts) ----------------------------------------------
_OUTCOME = {
    WorkflowExecution.Status.COMPLETED: "completed_executions",
    WorkflowExecution.Status.FAILED: "failed_executions",
    WorkflowExecution.Status.CANCELLED: "cancelled_executions",
}


def execution_book(*, execution: WorkflowExecution, calls: list[dict], messages: list[Message]) -> list[tuple]:
    """The statements that book an ending run, to run in the transaction that ends it, in this order: the usage
    rollups (the run, its LLM calls summed per provider and model, as execution_finished carries them, and its
    messages), then its template's analytics slot (the run), which every run of the template updates: last, so
    that its lock is held only to the commit. The runner runs them with the run's last write (execution_ending)."""
    rows: dict = {}
    slot = UsageRollup.slot_of(execution)

    def add(moment, provider: str, model: str, counters: dict) -> None:
        dims = usage_dimensions(day=usage_day(moment), owner_id=execution.owner_id, provider=provider, model=model,
                                template_id=execution.template_id, conversation_id=execution.conversation_id,
                                api_key_id=execution.api_key_id, slot=slot)
        row = rows.setdefault(dims["key"], {**dims, **usage_zero()})
        for name, value in counters.items():
            row[name] += value or 0

    ended = execution.completed_at or execution.created_at
    add(ended, execution.provider, execution.model, {"executions": 1, _OUTCOME[execution.status]: 1})
    for call in calls:
        add(ended, call["provider"], call["model"], {name: call[name] for name in ("llm_calls", *CALL_FIGURES)})
    for message in messages:  # a run's messages are in its conversation, which its owner owns
        add(message.created_at, message.provider_used, message.model_used, {"messages": 1})
    figures = _template_figures(execution)
    return [_usage_sql(rows), *([_template_analytics_sql(
        template_id=execution.template_id, slot=TemplateAnalytics.slot_of(execution.pk), figures=figures)]
        if figures is not None else [])]


def usage_calls_reprice(*, execution: WorkflowExecution, calls: list[dict]) -> None:
    """Carry the cost change of an ended run's re-priced calls to the rows that booked them when it ended."""
    day = usage_day(execution.completed_at or execution.created_at)
    for call in sorted(calls, key=lambda call: (call["provider"], call["model"])):
        dims = usage_dimensions(day=day, owner_id=execution.owner_id, provider=call["provider"], model=call["model"],
                                template_id=execution.template_id, conversation_id=execution.conversation_id,
                                api_key_id=execution.api_key_id, slot=UsageRollup.slot_of(execution))
        if not _usage_change(dims, {"cost": call["cost"]}):
            raise Conflict(f"the usage rollup of {_usage_label(dims)} is missing, or drifted below the change "
                           f"({call['cost']}): run reconcile_aggregates --fix, then re-price again")


def usage_message_add(*, message: Message) -> None:
    """Count a saved message, in the transaction that saves it. A run's messages are booked when it ends."""
    if message.execution_id is not None:
        return
    dims = _message_dimensions(message, template_id=None, api_key_id=None)
    _usage_upsert({dims["key"]: {**dims, **usage_zero(), "messages": 1}})


def usage_message_subtract(*, message: Message) -> None:
    """Take a deleted message out of its row's count, in the transaction that deletes it (which holds its
    conversation's lock: a run's ending that books the message waits for it, or went before). A message of a run
    still going was not counted: its run books the messages it still has when it ends."""
    template_id = api_key_id = None
    if message.execution_id is not None:
        run = WorkflowExecution.objects.filter(pk=message.execution_id).values(
            "status", "template_id", "api_key_id").first()
        if run is not None and run["status"] not in WorkflowExecution.TERMINAL:
            return
        template_id, api_key_id = (run["template_id"], run["api_key_id"]) if run is not None else (None, None)
    dims = _message_dimensions(message, template_id=template_id, api_key_id=api_key_id)
    if not _usage_change(dims, {"messages": -1}):
        # The row predates the rollups (or was lost): reconcile_aggregates reports it and --fix rebuilds it.
        logger.error("usage rollup %s missing: a deleted message not taken out of it", _usage_label(dims))


def _message_dimensions(message: Message, *, template_id, api_key_id) -> dict:
    if Message.conversation.is_cached(message):  # message_save hands over the conversation it locked
        owner_id = message.conversation.owner_id
    else:
        owner_id = Conversation.objects.values_list("owner_id", flat=True).get(pk=message.conversation_id)
    return usage_dimensions(day=usage_day(message.created_at), owner_id=owner_id, provider=message.provider_used,
                            model=message.model_used, template_id=template_id,
                            conversation_id=message.conversation_id, api_key_id=api_key_id)


def usage_rollups_detach(*, conversation_id=None, template_id=None, except_owner_ids=()) -> None:
    """Before a conversation or template is deleted: move its rows to the null conversation/template, as its runs'
    references become null. Messages that go with a conversation leave the count. Rows of owners being deleted
    too (`except_owner_ids`) are left to go with their owner."""
    with transaction.atomic():
        rows = UsageRollup.objects.exclude(owner_id__in=except_owner_ids)
        rows = rows.filter(conversation_id=conversation_id) if conversation_id else rows.filter(template_id=template_id)
        moved: dict = {}
        found = list(rows.select_for_update().values(*UsageRollup.DIMENSIONS, *UsageRollup.COUNTERS))
        for row in found:
            dims = {name: row[name] for name in UsageRollup.DIMENSIONS}
            counters = {name: row[name] for name in UsageRollup.COUNTERS}
            if conversation_id:
                dims["conversation_id"], counters["messages"] = None, 0
            else:
                dims["template_id"] = None
            dims = usage_dimensions(**dims)
            target = moved.setdefault(dims["key"], {**dims, **usage_zero()})
            for name, value in counters.items():
                target[name] += value
        rows.delete()
        _usage_upsert({key: row for key, row in moved.items() if any(row[name] for name in UsageRollup.COUNTERS)})


def usage_rollups_rebuild() -> int:
    """Recompute every rollup row from the source rows. Writers that committed before are in the result; writers
    still open wait for the lock (PostgreSQL; SQLite has one writer at a time) and add their share after."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(UsageRollup._meta.db_table)} "
                               "IN SHARE ROW EXCLUSIVE MODE")
        UsageRollup.objects.all().delete()
        rows = usage_from_source()
        UsageRollup.objects.bulk_create((UsageRollup(**row) for row in rows.values()), batch_size=2000)
    return len(rows)


def usage_rollups_ensure() -> int:
    """After migrate: build the rollups of a database that has usage but no rollup rows yet (one that predates
    them). Rows are otherwise only ever changed by the receivers and the reconcile command."""
    if UsageRollup.objects.exists():
        return 0
    if not (Message.objects.exists() or WorkflowExecution.objects.filter(
            status__in=WorkflowExecution.TERMINAL).exists()):
        return 0
    return usage_rollups_rebuild()


def _usage_upsert(rows: dict) -> None:
    """Add the counters of each row to the stored row with its key, creating it when missing."""
    if rows:
        statements_run(_usage_sql(rows))


def _usage_sql(rows: dict) -> tuple[str, list]:
    """Keys are written in a fixed order, so two transactions never wait on each other's rows in a cycle."""
    return usage_rollups_add([rows[key] for key in sorted(rows, key=str)])


def _usage_change(dims: dict, changes: dict) -> bool:
    """Change an existing row by signed amounts (an INSERT could not carry a negative count past its CHECK): the
    row of `dims`' key, or, where that one cannot take it (a rebuild put its dimensions' figures in slot 0),
    another slot of the same dimensions that can (a figure is the sum over its slots). False when none can: the
    row predates the rollups or was lost (reconcile_aggregates reports it and --fix rebuilds it)."""
    fits = Q(**{f"{name}__gte": -value for name, value in changes.items() if value < 0})
    same = UsageRollup.objects.filter(fits, **{name: dims[name] for name in UsageRollup.DIMENSIONS})
    first = same.annotate(other=Case(When(key=dims["key"], then=Value(0)), default=Value(1))).order_by("other", "key")
    return UsageRollup.objects.filter(fits, pk__in=first.values("pk")[:1]).update(
        **{name: F(name) + value for name, value in changes.items()}) == 1


def _usage_label(dims: dict) -> str:
    """A rollup row's dimensions as reconcile_aggregates names them."""
    return "/".join(str(dims[name] or "-") for name in UsageRollup.DIMENSIONS)
