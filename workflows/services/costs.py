"""Re-pricing: the cost of a past LLM call changes (recompute_costs), and every total that counted it with it."""
from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models import F

from conversations.models import Message
from conversations.services import message_cost_adjust
from workflows.models import LLMCall, NodeExecution, WorkflowExecution
from workflows.signals import usage_repriced


def llm_call_cost_adjust(*, call: LLMCall, delta: Decimal) -> None:
    """Change an LLM call's cost by `delta`, and by the same amount its node's, its run's and the run's assistant
    message's (with its conversation's). The aggregates of an ended run above workflows hear it as usage_repriced."""
    with transaction.atomic():
        # Locked and read afresh: a run that ends meanwhile either booked the old cost (and is terminal here) or
        # books the new one once this commits.
        execution = WorkflowExecution.objects.select_for_update().get(pk=call.execution_id)
        LLMCall.objects.filter(pk=call.pk).update(cost=F("cost") + delta)
        if call.node_execution_id:
            NodeExecution.objects.filter(pk=call.node_execution_id).update(cost=F("cost") + delta)
        WorkflowExecution.objects.filter(pk=execution.pk).update(cost=F("cost") + delta)
        reply = Message.objects.filter(execution=execution, role=Message.Role.ASSISTANT).only("pk").first()
        if reply is not None:
            message_cost_adjust(message_id=reply.pk, delta=delta)
        if execution.status in WorkflowExecution.TERMINAL:
            usage_repriced.send(sender=WorkflowExecution, execution=execution,
                                calls=[{"provider": call.provider, "model": call.model, "cost": delta}])
