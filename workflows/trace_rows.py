"""The rows and events of a run's trace as its recorder holds them, built from what the engine reports."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from audit.services import audit_fields
from core.db import Insert
from core.money import usd
from engine.graph import Node
from engine.hooks import Attempt
from engine.hooks import LLMCall as Call
from workflows.ledger import NODE_COUNTERS
from workflows.models import NodeExecution

MAX_ARGUMENT_CHARS = 4000
MAX_AUDIT_ARGUMENT_CHARS = 1000
MAX_RESULT_CHARS = 4000
MAX_TOOL_NAME_CHARS = 100  # ToolCall.tool's column: a model may ask for a tool of any name, and its call gets a row
COUNTERS = NODE_COUNTERS  # a node's and an execution's


def one_at_a_time(method):
    """A recorder's method: parallel branches run their nodes on LangGraph's threads, one recorder, one at a time
    (its `_lock`), each after the recorder's write under way on a writer thread, if any (workflows.writer)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            self.writing.settle()
            return method(self, *args, **kwargs)

    return locked


def capped(value: Any, limit: int) -> Any:
    """`value` as a row keeps it: text cut at `limit` characters, anything else whole or, past `limit` as JSON,
    as {"truncated": its JSON cut}."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    encoded = json.dumps(value, default=str)
    return value if len(encoded) <= limit else {"truncated": encoded[:limit]}


def no_usage() -> dict:
    return {name: Decimal("0") if name == "cost" else 0 for name in COUNTERS}


@dataclass
class OpenNode:
    """A node that has started and not ended, with what it has counted so far."""

    node: Node
    index: int
    started_at: datetime
    clock: float
    usage: dict = field(default_factory=no_usage)
    in_flight: dict | None = None  # the model call it waits on (ExecutionRecorder.model_call_started)
    prompt_version_id: Any = None  # the stored prompt version its model calls send (ExecutionRecorder.prompt)


def node_row(opened: OpenNode, **fields) -> dict:
    """An open node's row: running, naming the model call it waits on, with its counters; `fields` as it ends."""
    return {"node_id": opened.node.id, "node_type": opened.node.type, "started_at": opened.started_at,
            "status": NodeExecution.Status.RUNNING, "completed_at": None, "duration_ms": None,
            "output": {"call_in_flight": opened.in_flight} if opened.in_flight else {},
            "error_message": "", **opened.usage, **fields}


def llm_call_row(call: Call, *, prompt_version_id) -> dict:
    """An LLM call's row (its node's id is added as it is written)."""
    usage = call.usage
    return {"provider": call.provider, "model": call.model, "requested_model": call.requested_model,
            "unpriced": usage.unpriced, **usage.token_fields(),
            "cached_prompt_tokens": usage.cached_prompt_tokens, "reasoning_tokens": usage.reasoning_tokens,
            "cost": usage.cost, "provider_cost": usage.provider_cost, "estimated": usage.estimated,
            "usage_raw": usage.raw, "duration_ms": call.duration_ms, "deployment": call.deployment,
            "prompt_version_id": prompt_version_id, "created_at": timezone.now(), "kind": call.kind}


def attempt_row(attempt: Attempt) -> dict:
    """A routed call's try (ProviderAttempt; its node's id is added as it is written)."""
    return {"deployment": attempt.deployment, "model": attempt.model, "provider": attempt.provider, "ok": attempt.ok,
            "error_type": attempt.error_type, "error": attempt.error, "status_code": attempt.status_code,
            "cooldown_s": attempt.cooldown_s, "duration_ms": attempt.duration_ms, "created_at": timezone.now()}


def tool_call_row(*, node_id: str, tool: str, server_id: str | None, arguments: Any, result: Any, ok: bool,
                  error: str, duration_ms: int, cost: Decimal) -> dict:
    """A tool call's row, its arguments, result and error capped."""
    return {"node_id": node_id, "tool": tool[:MAX_TOOL_NAME_CHARS], "server_id": server_id, "server_ref": server_id,
            "arguments": capped(arguments, MAX_ARGUMENT_CHARS), "result": capped(result, MAX_RESULT_CHARS),
            "ok": ok, "error": error[:MAX_RESULT_CHARS], "duration_ms": duration_ms, "cost": cost,
            "created_at": timezone.now()}


def tool_call_audit(*, node_id: str, tool: str, ok: bool, error: str, arguments: Any) -> dict:
    """`tool.called`'s data, from a call's arguments as its ToolCall row keeps them (capped at
    MAX_ARGUMENT_CHARS), the audit row keeping less."""
    if isinstance(arguments, dict) and arguments.keys() == {"truncated"}:  # already cut: cut further
        arguments = {"truncated": arguments["truncated"][:MAX_AUDIT_ARGUMENT_CHARS]}
    return {"node_id": node_id, "tool": tool, "ok": ok, "error": error or None,
            "arguments": capped(arguments, MAX_AUDIT_ARGUMENT_CHARS)}


def audit_rows(execution, held: list[tuple[str, dict]]) -> list[dict]:
    """The run's held audit rows (action, data) as the audit trail's, the run's owner (or its schedule) acting."""
    return [audit_fields(action=action, actor=execution.owner, target=execution,
                         actor_type="schedule" if execution.schedule_id else "user",
                         correlation_id=execution.correlation_id, data=data) for action, data in held]


def node_finished_event(*, node_id, node_type, index, status, duration_ms, total_tokens, cost,
                        error) -> tuple[str, dict]:
    """A node's end as its event: `node_failed` or `node_completed`, and its data."""
    return ("node_failed" if status == "failed" else "node_completed", {
        "node_id": node_id, "node_type": node_type, "index": index, "status": status,
        "duration_ms": duration_ms, "total_tokens": total_tokens, "cost": usd(cost), "error": error or None,
    })


def node_rows_bound(insert: Insert, held: list[tuple[int | None, dict]], *, execution_id,
                    node_pks: dict[int, int] | None) -> tuple[str, list]:
    """The statement of a run's held rows of a node (LLM calls, their tries: the node's index, the row's fields),
    each naming its node's row by `node_pks` (index → id), or with None by the id the nodes' upsert in the same
    statement returns for its index (the WITH part along_0: core.db.Insert.bound_joined)."""
    rows = [{"execution_id": execution_id, "node_execution_id": index if node_pks is None else node_pks.get(index),
             **fields} for index, fields in held]
    return insert.bound(rows) if node_pks is not None else \
        insert.bound_joined(rows, column="node_execution_id", part="along_0", key="index")
