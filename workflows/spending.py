"""A run's budget guard: what a run under a hard budget does before each model call. Its reservation must cover
its spend so far and the call's worst case (budgets.services), or the run stops there. One BudgetGuard per run,
handed to its recorder (workflows.recorder); its holds are settled by the run's ending (workflows.runner)."""
from __future__ import annotations

import copy

from django.db import transaction

from budgets.services import CompletionGuard, budget_top_up, worst_case
from core.db import retried_on_conflict
from engine.hooks import CallStarted
from engine.usage import Usage
from workflows.models import WorkflowExecution


class BudgetGuard:
    def __init__(self, execution_id, holds: list[dict] | None):
        self.execution_id = execution_id
        self.holds: list[dict] = [dict(hold) for hold in holds or []]  # the run's reservations, as on its row
        self._completion: CompletionGuard | None = None  # the call in flight's

    @property
    def hard(self) -> bool:
        """Whether a hard budget binds the run: only then is each call covered before it waits."""
        return any(hold["hard"] for hold in self.holds)

    def cover(self, call: CallStarted, *, spent: Usage, price) -> str | None:
        """Before a call waits, the reservation must cover the run's spend so far and this call's worst case:
        topped up if not (and recorded on the run). Returns the budget that had no room (the run stops before the
        call), else None."""
        self._completion = CompletionGuard(call.max_tokens or 0)
        worst = worst_case(prompt_tokens=call.prompt_tokens, max_tokens=call.max_tokens or 0, price=price,
                           choices=call.choices)
        self.holds, refused = self._top_up(usd=spent.cost + worst.usd, tokens=spent.total_tokens + worst.tokens)
        return refused["budget"] if refused is not None else None

    def cover_cost(self, *, spent: Usage, cost) -> str | None:
        """Before a priced tool call, the reservation must cover the run's spend so far and the call's price:
        topped up if not. Returns the budget that had no room (the call is refused), else None."""
        self.holds, refused = self._top_up(usd=spent.cost + cost, tokens=spent.total_tokens)
        return refused["budget"] if refused is not None else None

    def past(self, text: str) -> str | None:
        """A fragment of the call in flight's reply: the hard budget it streams past its reservation of, if any."""
        if self._completion is not None and self._completion.past(text):
            return next(hold["budget"] for hold in self.holds if hold["hard"])
        return None

    @retried_on_conflict
    def _top_up(self, *, usd, tokens) -> tuple[list[dict], dict | None]:
        """Top the run's holds up in one transaction, in the one lock order (docs/architecture.md#the-lock-order): the
        run's row, then the budgets' periods. Returns the holds as they now are (a copy: a transaction rolled back
        leaves the run's own as they were) and the hold of the budget that had no room, if one had none."""
        holds = copy.deepcopy(self.holds)
        with transaction.atomic():
            run = WorkflowExecution.objects.filter(pk=self.execution_id)
            list(run.select_for_update(no_key=True).values_list("pk"))
            refused = budget_top_up(holds=holds, usd=usd, tokens=tokens)
            run.update(budget_holds=holds)
        return holds, refused
