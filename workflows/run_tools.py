"""A run's tool calls: the MCP tools it may call (RunTools) and what each call records (ToolCallHooks)."""
from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from langchain_core.messages import ToolMessage

from core.money import usd
from engine.graph import Node
from engine.hooks import ToolOutcome
from engine.redaction import secrets_scrubbed
from engine.tools import tool_allowed
from engine.usage import Usage
from tools.selectors import (
    ToolUnavailable,
    mcp_secrets,
    mcp_server_ids_existing,
    mcp_tool_get,
    tool_list,
)
from tools.services import mcp_server_tool_run
from workflows.pricing import TOOL_PRICES
from workflows.trace_rows import (MAX_ARGUMENT_CHARS, MAX_RESULT_CHARS, capped, one_at_a_time, tool_call_audit,
                                  tool_call_row)


class RunTools:
    """The MCP tools a run may call, for its engine (RunHooks.tool_schemas and tool_run, answered by the run's
    recorder): those its config's `allowed_tools` names (`<server>__<tool>` or `<server>__*`) that its owner may
    call (their own servers and the shared ones, switched on), each call through tools.services.mcp_server_tool_run."""

    def __init__(self, execution):
        self.execution = execution
        self._schemas: dict[tuple[str, ...], list[dict]] = {}  # read once per run for an allow-list
        self._secrets: dict[str, tuple[str, ...]] = {}  # per server, their forms: read as its first call starts

    def schemas(self, patterns: Sequence[str]) -> list[dict]:
        """The allowed MCP tools the owner may call now, as OpenAI function schemas (what a model is bound with)."""
        key = tuple(patterns)
        if key not in self._schemas:
            self._schemas[key] = [
                {"type": "function", "function": {"name": tool["name"], "description": tool["description"],
                                                  "parameters": tool["input_schema"]}}
                for tool in tool_list(user=self.execution.owner)
                if tool["server"] is not None and tool["enabled"] and tool_allowed(tool["name"], key)]
        return self._schemas[key]

    def secrets_read(self, *, server_id, server=None) -> None:
        """The secrets registered for the server (`server`: read already) that its calls' rows must not keep, read
        once, as its first call starts: a server deleted during a call has them no more."""
        if str(server_id) not in self._secrets:
            self._secrets[str(server_id)] = mcp_secrets(server_id=server_id, user=self.execution.owner, server=server)

    def redacted(self, value, *, server_id: str | None):
        """`value` (a call's arguments, result or error) without the secrets registered for the server (its header
        values, the run owner's own credentials): what a ToolCall row and the audit keep. A call read them as it
        started (a JSON workflow's in `run`, a Python graph's through the recorder's `mcp_call_started`)."""
        if server_id is None:
            return value
        self.secrets_read(server_id=server_id)
        forms = self._secrets[str(server_id)]
        return secrets_scrubbed(value, forms) if forms else value

    def run(self, name: str, arguments: dict, *, timeout_s: float) -> ToolOutcome:
        """Call the MCP tool `name` as the run's owner; whatever happens, an outcome the model is told."""
        user = self.execution.owner
        try:
            server, tool = mcp_tool_get(user=user, name=name)  # once, for the call and its row
            self.secrets_read(server_id=server.pk, server=server)
            result = mcp_server_tool_run(server=server, user=user, tool=tool, arguments=arguments,
                                         timeout_s=timeout_s)
        except ToolUnavailable as exc:
            return ToolOutcome(ok=False, text="", error=str(exc))
        return ToolOutcome(ok=result.ok, text=result.text, error=result.error, server_id=str(server.pk))


def tool_rows_servers_kept(rows: list[dict]) -> list[dict]:
    """Held tool call rows as they may be written now: a server deleted since its call (while it ran) is named no
    more (`server_id` null; `server_ref` and `tool` still name it). Read in the write's own transaction, just before its INSERT."""
    named = {row["server_id"] for row in rows if row["server_id"] is not None}
    if not named:
        return rows
    existing = mcp_server_ids_existing(ids=named)
    return [row if row["server_id"] is None or row["server_id"] in existing else {**row, "server_id": None}
            for row in rows]


class ToolCallHooks:
    """The RunHooks of tool calls. Uses the recorder's hold (emit, audit, `_tools`, `_added`, the open node) and
    its collaborators (run_tools, reads, budget, spans); `_tool_costs`: the cost of its MCP calls, per tool."""

    @one_at_a_time
    def tool_started(self, node: Node, *, tool: str, call_id: str | None, waits: bool) -> None:
        """`tool_start`; a call that waits (an MCP tool) writes what the run holds first, so watchers see it."""
        self.emit("tool_start", {"node_id": node.id, "tool": tool, "call_id": call_id})
        if waits:
            self._wait_ahead()

    @one_at_a_time
    def tool_called(self, node: Node, *, tool: str, arguments: dict, result: str, ok: bool, error: str,
                    duration_ms: int, server_id: str | None = None, cost: Decimal = Decimal("0"),
                    message: ToolMessage | None = None) -> None:
        # An MCP call keeps nothing of its server's registered secrets (a model may pass one on, a tool echo it).
        arguments, result, error = (self.run_tools.redacted(value, server_id=server_id)
                                    for value in (arguments, result, error))
        self._tools.append(tool_call_row(node_id=node.id, tool=tool, server_id=server_id, arguments=arguments,
                                         result=result, ok=ok, error=error, duration_ms=duration_ms, cost=cost))
        # The tool's message to the model, as the run's state holds it (capped as the call's row keeps its result).
        told = {} if message is None else {
            "call_id": message.tool_call_id, "message_id": message.id,
            "content": capped(self.run_tools.redacted(message.content, server_id=server_id), MAX_RESULT_CHARS)}
        self.emit("tool_called", {"node_id": node.id, "tool": tool, "ok": ok, "duration_ms": duration_ms,
                                  "error": error or None, **({"cost": usd(cost)} if cost else {}), **told})
        if self.spans is not None:
            self.spans.tool_called(self.open.index if self.open else None, tool=tool, ok=ok, error=error,
                                   duration_ms=duration_ms, server_id=server_id, arguments=arguments, result=result)
        if server_id is not None and ok:  # an MCP call that answered: booked in the rollups, priced or not
            self._tool_costs[tool] = self._tool_costs.get(tool, Decimal("0")) + cost
        if cost:  # what it cost counts like an LLM call's: on its node, the run, and so budgets and the reply
            self._added["cost"] += cost
            if self.open is not None:
                self.open.usage["cost"] += cost
        self.audit_tool_call(node_id=node.id, tool=tool, ok=ok, error=error,
                             arguments=capped(arguments, MAX_ARGUMENT_CHARS))
        self.tool_calls += 1
        self._added["tool_calls"] += 1
        if self.open is not None:
            self.open.usage["tool_calls"] += 1

    def audit_tool_call(self, **called) -> None:
        """`tool.called` (trace_rows.tool_call_audit)."""
        self.audit("tool.called", tool_call_audit(**called))

    def mcp_call_started(self, *, server_id: str) -> None:
        self.run_tools.secrets_read(server_id=server_id)

    def tool_schemas(self, patterns) -> list[dict]:
        return self.run_tools.schemas(patterns)

    def tool_run(self, name: str, arguments: dict, *, timeout_s: float):
        return self.run_tools.run(name, arguments, timeout_s=timeout_s)

    def tool_price(self, name: str) -> Decimal:
        return self.reads.tool_price(name)

    def tool_cover(self, price: Decimal) -> str | None:
        """Under a hard budget, the reservation must cover the run's spend so far and this priced call, or the
        call is refused (a `limit_exceeded` event names the budget; the run goes on)."""
        if not self.budget.hard:
            return None
        refused = self.budget.cover_cost(spent=self.spent(), cost=price)
        if refused is not None:
            self.limit_exceeded("budget", refused)
        return refused

    def spent(self) -> Usage:
        """What the run has spent so far: its LLM calls and its priced tool calls."""
        return sum((c.usage for c in self.calls), Usage()) + Usage(cost=sum(self._tool_costs.values(), Decimal("0")))

    def tool_costs(self) -> list[dict]:
        """The cost of the run's MCP calls that answered, per tool (0 when unpriced: a later re-pricing finds its
        row), as the usage rollups book them at its end (provider "mcp")."""
        return [{"provider": TOOL_PRICES, "model": tool, "llm_calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                 "total_tokens": 0, "cached_prompt_tokens": 0, "reasoning_tokens": 0, "cost": cost}
                for tool, cost in sorted(self._tool_costs.items())]
