"""Re-pricing: the cost of a past LLM call changes (recompute_costs), and every total that counted it with it."""
from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models import F

from budgets.services import budget_spend_adjust
from conversations.models import Message
from conversations.services import message_cost_adjust
from workflows.models import LLMCall, NodeExecution, ToolCall, WorkflowExecution
from workflows.pricing import TOOL_PRICES
from workflows.signals import usage_repriced


def llm_call_cost_adjust(*, call: LLMCall, delta: Decimal) -> bool:
    """Change an ended run's LLM call's cost by `delta`, and by the same amount its node's, its run's, the run's
    assistant message's (with its conversation's) and the spend of the budget periods it held; the aggregates
    above workflows hear it as usage_repriced. A run still in progress is left alone (False): it books the costs it
    priced its calls with when it ends (its totals are kept in memory), and a later re-pricing reaches it once it
    has ended."""
    with transaction.atomic():
        # Locked and read afresh: the run's own ending waits for this, or this sees it ended.
        execution = WorkflowExecution.objects.select_for_update().get(pk=call.execution_id)
        if execution.status not in WorkflowExecution.TERMINAL:
            return False
        LLMCall.objects.filter(pk=call.pk).update(cost=F("cost") + delta)
        if call.node_execution_id:
            NodeExecution.objects.filter(pk=call.node_execution_id).update(cost=F("cost") + delta)
        WorkflowExecution.objects.filter(pk=execution.pk).update(cost=F("cost") + delta)
        reply = Message.objects.filter(execution=execution, role=Message.Role.ASSISTANT).only("pk").first()
        if reply is not None:
            message_cost_adjust(message_id=reply.pk, delta=delta)
        budget_spend_adjust(holds=execution.budget_holds, usd=delta)  # after the conversation, as a run's ending
        usage_repriced.send(sender=WorkflowExecution, execution=execution,
                            calls=[{"provider": call.provider, "model": call.model, "cost": delta}])
    return True


def tool_call_cost_adjust(*, call: ToolCall, delta: Decimal) -> bool:
    """Change an ended run's MCP tool call's cost by `delta`, and by the same amount its node's (the pass of its
    node that made it), its run's, the run's assistant message's and its budget periods' spend; the aggregates hear
    it as usage_repriced (on provider "mcp", the tool as the model). A run still in progress is left alone (False),
    as for LLM calls."""
    with transaction.atomic():
        execution = WorkflowExecution.objects.select_for_update().get(pk=call.execution_id)
        if execution.status not in WorkflowExecution.TERMINAL:
            return False
        ToolCall.objects.filter(pk=call.pk).update(cost=F("cost") + delta)
        node = NodeExecution.objects.filter(execution=execution, node_id=call.node_id,
                                            started_at__lte=call.created_at).order_by("-index").only("pk").first()
        if node is not None:
            NodeExecution.objects.filter(pk=node.pk).update(cost=F("cost") + delta)
        WorkflowExecution.objects.filter(pk=execution.pk).update(cost=F("cost") + delta)
        reply = Message.objects.filter(execution=execution, role=Message.Role.ASSISTANT).only("pk").first()
        if reply is not None:
            message_cost_adjust(message_id=reply.pk, delta=delta)
        budget_spend_adjust(holds=execution.budget_holds, usd=delta)  # after the conversation, as a run's ending
        usage_repriced.send(sender=WorkflowExecution, execution=execution,
                            calls=[{"provider": TOOL_PRICES, "model": call.tool, "cost": delta}])
    return True


def llm_call_unpriced_mark(*, call: LLMCall, unpriced: bool) -> None:
    """Flag a call whose model had no price in force at its time (its cost is unknown, kept as it was), or clear
    the flag once a price covers it."""
    LLMCall.objects.filter(pk=call.pk).update(unpriced=unpriced)
