"""What a run under a hard budget does before each model call (workflows.recorder.ExecutionRecorder): its
reservation must cover its spend so far and the call's worst case (budgets.services), or the run stops there."""
from __future__ import annotations

import copy

from django.db import transaction

from budgets.services import CompletionGuard, budget_top_up, worst_case
from core.db import retried_on_conflict
from core.errors import BudgetExceeded
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
        self.budget_holds, refused = self._budget_top_up(usd=spent.cost + worst.usd,
                                                         tokens=spent.total_tokens + worst.tokens)
        if refused is not None:  # (the node's end, next, clears the call it was to make)
            self._budget_stop(refused["budget"])

    @retried_on_conflict
    def _budget_top_up(self, *, usd, tokens) -> tuple[list[dict], dict | None]:
        """Top the run's holds up in one transaction, in the one lock order (core.db): the run's row,
        then the budgets' periods. Returns the holds as they now are (a copy: a transaction rolled back leaves the
        run's own as they were) and the hold of the budget that had no room, if one had none."""
        holds = copy.deepcopy(self.budget_holds)
        with transaction.atomic():
            run = WorkflowExecution.objects.filter(pk=self.execution.pk)
            list(run.select_for_update(no_key=True).values_list("pk"))
            refused = budget_top_up(holds=holds, usd=usd, tokens=tokens)
            run.update(budget_holds=holds)
        return holds, refused

    def _budget_stop(self, budget_id: str) -> None:
        self.limit_exceeded("budget", budget_id)
        raise BudgetExceeded("budget", budget_id, f"the run reached budget {budget_id}")
