"""Writes of analytics: reconciling stored aggregates with their source rows, and re-pricing past calls."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import F, Sum

from analytics.models import TemplateAnalytics
from analytics.selectors import price_for_call, template_analytics_from_executions
from conversations.models import Conversation, Message
from conversations.selectors import conversation_totals_from_messages
from conversations.services import conversation_get_for_update, message_cost_adjust
from workflows.engine.usage import Usage, cost_for_usage
from workflows.models import LLMCall, NodeExecution, WorkflowExecution


def _diff(stored: dict | None, actual: dict) -> dict:
    if stored is None:
        return {key: (None, value) for key, value in actual.items()}
    return {key: (stored[key], value) for key, value in actual.items() if stored[key] != value}


def aggregates_drift() -> list[dict]:
    """Every stored aggregate that differs from the sum of its source rows (I1 conversations, I2 templates,
    I3 executions)."""
    drift = []
    for pk, row in conversation_totals_from_messages().items():
        if fields := _diff(row["stored"], row["actual"]):
            drift.append({"kind": "conversation", "id": str(pk), "fields": fields})
    for row in template_analytics_from_executions().values():
        if fields := _diff(row["stored"], row["actual"]):
            drift.append({"kind": "template", "id": row["key"], "fields": fields})
    drift += _execution_drift()
    return drift


def _execution_drift() -> list[dict]:
    """I3: a finished execution's totals equal the sums over its nodes (and its assistant message)."""
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
        for row in Message.objects.filter(execution__in=finished, role=Message.Role.ASSISTANT).values(
            "execution_id", "prompt_tokens", "completion_tokens", "total_tokens", "cost")
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
            if _diff(row["stored"], row["actual"]):
                TemplateAnalytics.objects.update_or_create(
                    template_id=pk, defaults={**row["actual"], "last_used_at": row["last_used_at"]})
                fixed += 1
    return fixed


def costs_recompute(*, since: datetime | None = None) -> int:
    """Re-price past LLM calls with the prices in force at each call's time; carry every difference to the
    node, execution, assistant message, conversation and template totals. Provider-reported costs stay."""
    calls = LLMCall.objects.filter(provider_cost=False).select_related("execution").order_by("id")
    if since is not None:
        calls = calls.filter(created_at__gte=since)
    changed = 0
    for call in calls.iterator():
        usage = Usage(prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                      cached_prompt_tokens=call.cached_prompt_tokens)
        cost = cost_for_usage(usage, price_for_call(provider=call.provider, model=call.model, at=call.created_at))
        delta = cost - call.cost
        if delta:
            _cost_adjust(call, delta)
            changed += 1
    return changed


def _cost_adjust(call: LLMCall, delta: Decimal) -> None:
    execution = call.execution
    with transaction.atomic():
        LLMCall.objects.filter(pk=call.pk).update(cost=F("cost") + delta)
        if call.node_execution_id:
            NodeExecution.objects.filter(pk=call.node_execution_id).update(cost=F("cost") + delta)
        WorkflowExecution.objects.filter(pk=execution.pk).update(cost=F("cost") + delta)
        reply = Message.objects.filter(execution=execution, role=Message.Role.ASSISTANT).only("pk").first()
        if reply is not None:
            message_cost_adjust(message_id=reply.pk, delta=delta)
        if execution.template_id and execution.status in WorkflowExecution.TERMINAL:
            TemplateAnalytics.objects.filter(template_id=execution.template_id).update(
                total_cost=F("total_cost") + delta)
