"""What a run under a hard budget does before each model call (workflows.recorder.ExecutionRecorder): its
reservation must cover its spend so far and the call's worst case (budgets.services), or the run stops there."""
from __future__ import annotations

from django.db import transaction

from budgets.services import CompletionGuard, budget_top_up, worst_case
from chatter_project.errors import BudgetExceeded
from workflows.engine.runtime import CallStarted
from workflows.engine.usage import Usage
from workflows.models import WorkflowExecution


class BudgetHeld:
    """Mixed into ExecutionRecorder, whose state it reads and sets (execution, calls, budget_holds, the guard)."""

    def _budget_cover(self, call: CallStarted) -> None:
        """Before a call waits, the run's reservation must cover its spend so far and this call's worst case: topped
        up if not (and recorded on the run). No room: the run stops before the call, failed / budget_exceeded."""
        self._guard = CompletionGuard(call.max_tokens or 0)
        spent = sum((c.usage for c in self.calls), Usage())
        worst = worst_case(prompt_tokens=call.prompt_tokens, max_tokens=call.max_tokens or 0,
                           price=self.price(call.provider, call.requested_model))
        with transaction.atomic():
            refused = budget_top_up(holds=self.budget_holds, usd=spent.cost + worst.usd,
                                    tokens=spent.total_tokens + worst.tokens)
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(budget_holds=self.budget_holds)
        if refused is not None:  # (the node's end, next, clears the call it was to make)
            self._budget_stop(refused["budget"])

    def _budget_stop(self, budget_id: str) -> None:
        self.limit_exceeded("budget", budget_id)
        raise BudgetExceeded("budget", budget_id, f"the run reached budget {budget_id}")
