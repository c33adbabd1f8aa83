"""A registered graph's priced MCP tool calls held to the run's budgets as a JSON workflow's are (nodes.tools):
before each call the run's reservation must cover what the run has spent, the priced calls still in flight (a ReAct
agent's ToolNode makes a turn's calls at once) and this call's price, or the call is not made and the model is told
why (a `limit_exceeded` event names the budget). What a call that answered cost is charged as its row is recorded
(GraphAccounting), when its reservation is released."""
from __future__ import annotations

from decimal import Decimal

from engine.runtime import RunContext
from engine.tools import budget_refusal


class ToolReservations:
    """Used on the run's thread only (GraphAccounting's hooks)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.in_flight: dict[str | None, Decimal] = {}  # a priced call's tool call id → its price

    def reserve(self, tool: str, call_id: str | None) -> str | None:
        """None when the call may be made (its price, if it has one, held until `release`), else the refusal."""
        price = self.ctx.hooks.tool_price(tool)
        if not price:
            return None
        budget = self.ctx.hooks.tool_cover(price + sum(self.in_flight.values(), Decimal("0")))
        if budget is not None:
            return budget_refusal(budget, tool)
        self.in_flight[call_id] = price
        return None

    def release(self, call_id: str | None) -> None:
        self.in_flight.pop(call_id, None)
