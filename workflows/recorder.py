"""ExecutionRecorder: the database side of a run. It implements the engine's RunHooks with rows and
events, each change in its own short transaction so watchers see progress as it happens and a crash
loses nothing already reported."""
from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from analytics.selectors import price_for_call
from conversations.selectors import conversation_history, documents_search
from workflows.engine.graph import Node
from workflows.engine.runtime import LLMCall as Call
from workflows.events import Sink, event_publish, event_envelope, event_record
from workflows.models import LLMCall, NodeExecution, ToolCall, WorkflowExecution

MAX_ARGUMENT_CHARS = 4000
MAX_RESULT_CHARS = 4000
CANCEL_POLL_S = 0.2

# Cancels requested in this process reach its runs at the next token; others are polled from the row.
_local_cancels: set[str] = set()
_local_cancels_lock = threading.Lock()


def cancel_signal_local(execution_id) -> None:
    with _local_cancels_lock:
        _local_cancels.add(str(execution_id))


def _capped(value: Any, limit: int) -> Any:
    text = value if isinstance(value, str) else None
    if text is not None:
        return text if len(text) <= limit else text[:limit] + "…"
    encoded = json.dumps(value, default=str)
    return value if len(encoded) <= limit else {"truncated": encoded[:limit]}


class ExecutionRecorder:
    def __init__(self, execution: WorkflowExecution, *, sink: Sink | None = None, user_message=None):
        self.execution = execution
        self.sink = sink
        self.user_message = user_message
        self.seq = execution.events.count()
        self.index = 0
        self.node_row: NodeExecution | None = None
        self.node_started_at = 0.0
        self.node_usage = {"total_tokens": 0, "cost": Decimal("0")}
        self.last_call: Call | None = None
        self._cancel_polled = 0.0
        self._cancelled = False

    # --- events ---------------------------------------------------------------------------------------
    def emit(self, event: str, data: dict) -> dict:
        self.seq += 1
        return event_record(
            execution_id=self.execution.pk, seq=self.seq, event=event, data=data, sink=self.sink,
            owner_id=self.execution.owner_id,
        )

    def publish(self, event: str, data: dict) -> None:
        """An event that is broadcast but not part of the run's persisted log (token, conversation_updated)."""
        envelope = event_envelope(execution_id=self.execution.pk, event=event, data=data, seq=None)
        event_publish(envelope, sink=self.sink, owner_id=self.execution.owner_id)

    # --- RunHooks -------------------------------------------------------------------------------------
    def node_started(self, node: Node) -> None:
        self.index += 1
        self.node_started_at = time.monotonic()
        self.node_usage = {"total_tokens": 0, "cost": Decimal("0")}
        with transaction.atomic():
            self.node_row = NodeExecution.objects.create(
                execution=self.execution, index=self.index, node_id=node.id, node_type=node.type,
                started_at=timezone.now(),
            )
            self.emit("node_started", {"node_id": node.id, "node_type": node.type, "index": self.index})

    def node_finished(self, node: Node, *, status: str, output: dict, error: str = "") -> None:
        duration_ms = int((time.monotonic() - self.node_started_at) * 1000)
        with transaction.atomic():
            NodeExecution.objects.filter(pk=self.node_row.pk).update(
                status=status, completed_at=timezone.now(), duration_ms=duration_ms,
                output=_capped(output, MAX_RESULT_CHARS), error_message=error,
            )
            self.emit(
                "node_failed" if status == "failed" else "node_completed",
                {
                    "node_id": node.id, "node_type": node.type, "index": self.index, "status": status,
                    "duration_ms": duration_ms, "total_tokens": self.node_usage["total_tokens"],
                    "cost": str(self.node_usage["cost"]), "error": error or None,
                },
            )

    def llm_called(self, node: Node, call: Call) -> None:
        usage = call.usage
        self.last_call = call
        self.node_usage["total_tokens"] += usage.total_tokens
        self.node_usage["cost"] += usage.cost
        added = {
            "prompt_tokens": F("prompt_tokens") + usage.prompt_tokens,
            "completion_tokens": F("completion_tokens") + usage.completion_tokens,
            "total_tokens": F("total_tokens") + usage.total_tokens,
            "cost": F("cost") + usage.cost,
            "llm_calls": F("llm_calls") + 1,
        }
        with transaction.atomic():
            LLMCall.objects.create(
                execution=self.execution, node_execution=self.node_row, provider=call.provider, model=call.model,
                **usage.token_fields(), cached_prompt_tokens=usage.cached_prompt_tokens,
                reasoning_tokens=usage.reasoning_tokens, cost=usage.cost, provider_cost=usage.provider_cost,
                estimated=usage.estimated, usage_raw=usage.raw, duration_ms=call.duration_ms,
                created_at=timezone.now(),
            )
            NodeExecution.objects.filter(pk=self.node_row.pk).update(**added)
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(**added)
            self.emit(
                "token_usage",
                {"node_id": node.id, "provider": call.provider, "model": call.model, **usage.as_event_data()},
            )

    def tool_called(self, node: Node, *, tool: str, arguments: dict, result: str, ok: bool, error: str,
                    duration_ms: int) -> None:
        with transaction.atomic():
            ToolCall.objects.create(
                execution=self.execution, node_id=node.id, tool=tool,
                arguments=_capped(arguments, MAX_ARGUMENT_CHARS), result=_capped(result, MAX_RESULT_CHARS),
                ok=ok, error=error, duration_ms=duration_ms,
            )
            NodeExecution.objects.filter(pk=self.node_row.pk).update(tool_calls=F("tool_calls") + 1)
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(tool_calls=F("tool_calls") + 1)
            self.emit("tool_called", {"node_id": node.id, "tool": tool, "ok": ok, "duration_ms": duration_ms,
                                      "error": error or None})

    def token(self, node: Node, text: str) -> None:
        self.publish("token", {"node_id": node.id, "text": text})

    def limit_exceeded(self, limit: str, value: Any) -> None:
        self.emit("limit_exceeded", {"limit": limit, "value": value})

    def cancel_requested(self) -> bool:
        if self._cancelled:
            return True
        key = str(self.execution.pk)
        if key in _local_cancels:
            self._cancelled = True
        elif time.monotonic() - self._cancel_polled >= CANCEL_POLL_S:
            self._cancel_polled = time.monotonic()
            self._cancelled = WorkflowExecution.objects.filter(pk=self.execution.pk, cancel_requested=True).exists()
        return self._cancelled

    def history(self, limit: int) -> list[BaseMessage]:
        if self.execution.conversation_id is None:
            return []
        before = self.user_message.sequence if self.user_message is not None else None
        rows = conversation_history(conversation_id=self.execution.conversation_id, before_sequence=before,
                                    limit=limit)
        kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        return [kinds[row.role](row.content) for row in rows]

    def documents(self, query: str, limit: int) -> list[dict]:
        return documents_search(owner_id=self.execution.owner_id, query=query, limit=limit)

    def price(self, provider: str, model: str):
        return price_for_call(provider=provider, model=model)

    def forget(self) -> None:
        with _local_cancels_lock:
            _local_cancels.discard(str(self.execution.pk))
