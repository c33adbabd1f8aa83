"""Tool-call analytics: calls, errors, cost and p50/p95 duration per tool, per MCP server or per template, over a
range of UTC days, read from the ToolCall rows (built-in tools and MCP tools alike)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from analytics.selectors import created_within
from tools.models import QUALIFIER
from workflows.models import ToolCall

TOOL_GROUPS = {
    # group → (the row's key fields, what the ToolCall rows are grouped by); a server's by server_ref, which a
    # deleted server's calls keep (their `server` is null, as a built-in's is)
    "tool": ("tool", "server__name"),
    "server": ("server_ref", "server__name"),
    "template": ("execution__template_id", "execution__template__name"),
}
MAX_CALLS = 200_000  # rows read for one report at most (the most recent): a wider range is cut there


@dataclass(frozen=True)
class ToolFigures:
    key: str | None  # the tool's name, the server's id or the template's id (None: no server / no template)
    name: str  # the server's or template's name ("" when none; the tool's server for a tool)
    calls: int
    errors: int
    cost: Decimal
    p50_ms: int
    p95_ms: int


def _percentile(sorted_values: list[int], q: float) -> int:
    """The nearest-rank percentile of a sorted, non-empty list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def tool_usage_report(*, group_by: str, start: date, end: date, owner_ids: list | None) -> list[ToolFigures]:
    """One row per tool, server or template with calls in [start, end] (UTC days) of runs of `owner_ids` (None:
    everyone's), most calls first."""
    key_field, name_field = TOOL_GROUPS[group_by]
    calls = ToolCall.objects.filter(created_within(start, end))
    if owner_ids is not None:
        calls = calls.filter(execution__owner_id__in=owner_ids)
    groups: dict = {}
    for key, name, ok, cost, duration, tool, server_ref in calls.order_by("-id").values_list(
            key_field, name_field, "ok", "cost", "duration_ms", "tool", "server_ref")[:MAX_CALLS]:
        key = str(key) if key is not None else None
        if name is None and server_ref is not None:  # its server deleted since: named as it was, by its tools
            name = tool.partition(QUALIFIER)[0]
        group = groups.setdefault(key, {"name": name or "", "errors": 0, "cost": Decimal("0"), "durations": []})
        group["errors"] += not ok
        group["cost"] += cost
        group["durations"].append(duration)
    rows = []
    for key, group in groups.items():
        durations = sorted(group["durations"])
        rows.append(ToolFigures(key=key, name=group["name"], calls=len(durations), errors=group["errors"],
                                cost=group["cost"], p50_ms=_percentile(durations, 0.5),
                                p95_ms=_percentile(durations, 0.95)))
    return sorted(rows, key=lambda row: (-row.calls, row.key or ""))
