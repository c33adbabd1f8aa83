"""ExecutionRecorder: the database side of a run. It implements the engine's RunHooks with rows and
events, each change in its own short transaction so watchers see progress as it happens and a crash
loses nothing already reported.

A run has one writer. If the recovery sweep ends a run while its process still runs it, the process's
next write collides with the sweep's events on (execution, seq) and is rolled back; from then on the
recorder refuses every write and the run stops with RunInterrupted, so nothing lands after the terminal
event."""
from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Iterator

from django.db import IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from analytics.selectors import price_for_call
from audit.services import audit_record
from conversations.selectors import conversation_history, documents_search
from workflows.engine.graph import Node
from workflows.engine.runtime import LLMCall as Call
from workflows.engine.runtime import RunInterrupted
from workflows.engine.usage import Usage
from workflows.events import Sink, event_publish, event_envelope, event_record
from workflows.models import ExecutionEvent, LLMCall, NodeExecution, ToolCall, WorkflowExecution

logger = logging.getLogger(__name__)
MAX_ARGUMENT_CHARS = 4000
MAX_AUDIT_ARGUMENT_CHARS = 1000
MAX_RESULT_CHARS = 4000
CANCEL_POLL_S = 0.2
HEARTBEAT_S = 5.0  # the sweep treats a run as orphaned after several missed beats (services.HEARTBEAT_LOST_S)
RUNNING = WorkflowExecution.Status.RUNNING

# Cancels requested in this process reach its runs at the next token; others are polled from the row.
_local_cancels: set[str] = set()
_local_cancels_lock = threading.Lock()


def cancel_signal_local(execution_id) -> None:
    with _local_cancels_lock:
        _local_cancels.add(str(execution_id))


class _Heartbeat:
    """Refreshes `heartbeat_at` of the runs this process is running, every HEARTBEAT_S, from one thread of
    its own: a run blocked in a long provider call still shows that its process is alive, and a run whose
    process died stops beating. The thread exists only while there are runs to beat for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._thread: threading.Thread | None = None

    def add(self, execution_id) -> None:
        with self._lock:
            self._live.add(str(execution_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat_while_live, name="chatter-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, execution_id) -> None:
        with self._lock:
            self._live.discard(str(execution_id))

    def _beat_while_live(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self._lock:
                live = list(self._live)
                if not live:
                    self._thread = None
                    return
            try:
                WorkflowExecution.objects.filter(pk__in=live, status=RUNNING).update(heartbeat_at=timezone.now())
            except Exception:  # noqa: BLE001 - a missed beat is retried; the sweep allows several
                logger.warning("could not refresh the heartbeat of %d runs", len(live), exc_info=True)
            finally:
                connections.close_all()  # this thread's connection only; it sleeps most of the time


heartbeat = _Heartbeat()


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
        self._superseded = False

    # --- events ---------------------------------------------------------------------------------------
    def emit(self, event: str, data: dict) -> dict:
        self.seq += 1
        return event_record(
            execution_id=self.execution.pk, seq=self.seq, event=event, data=data, sink=self.sink,
            owner_id=self.execution.owner_id,
        )

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One step of the run's trace (rows + its event) in one transaction, refused once the run has been
        ended elsewhere."""
        if self._superseded:
            raise RunInterrupted("the run was ended while it was still running")
        seq = self.seq
        try:
            with transaction.atomic():
                yield
        except IntegrityError:
            self.seq = seq
            if WorkflowExecution.objects.filter(pk=self.execution.pk, status=RUNNING).exists():
                raise
            self._superseded = True
            raise RunInterrupted("the run was ended while it was still running") from None
        except BaseException:
            self.seq = seq  # nothing of this step was committed, its event included
            raise

    def publish(self, event: str, data: dict) -> None:
        """An event that is broadcast but not part of the run's persisted log (token, conversation_updated)."""
        envelope = event_envelope(execution_id=self.execution.pk, event=event, data=data, seq=None)
        event_publish(envelope, sink=self.sink, owner_id=self.execution.owner_id)

    def audit(self, action: str, data: dict) -> None:
        """The run's audit row, written in the caller's transaction (with the rows and event it describes)."""
        execution = self.execution
        audit_record(action=action, actor=execution.owner,
                     actor_type="schedule" if execution.schedule_id else "user", target=execution,
                     correlation_id=execution.correlation_id, data=data)

    def started(self, data: dict) -> None:
        with self._write():
            self.emit("workflow_started", data)
            self.audit("execution.started", {"workflow_type": data["workflow_type"], "mode": self.execution.mode,
                                             "provider": data["provider"], "model": data["model"]})

    # --- RunHooks -------------------------------------------------------------------------------------
    def node_started(self, node: Node) -> None:
        self.index += 1
        self.node_started_at = time.monotonic()
        self.node_usage = {"total_tokens": 0, "cost": Decimal("0")}
        with self._write():
            self.node_row = NodeExecution.objects.create(
                execution=self.execution, index=self.index, node_id=node.id, node_type=node.type,
                started_at=timezone.now(),
            )
            self.emit("node_started", {"node_id": node.id, "node_type": node.type, "index": self.index})

    def node_finished(self, node: Node, *, status: str, output: dict, error: str = "") -> None:
        duration_ms = int((time.monotonic() - self.node_started_at) * 1000)
        with self._write():
            NodeExecution.objects.filter(pk=self.node_row.pk).update(
                status=status, completed_at=timezone.now(), duration_ms=duration_ms,
                output=_capped(output, MAX_RESULT_CHARS), error_message=error,
            )
            self._emit_node_finished(node_id=node.id, node_type=node.type, index=self.index, status=status,
                                     duration_ms=duration_ms, total_tokens=self.node_usage["total_tokens"],
                                     cost=self.node_usage["cost"], error=error)

    def _emit_node_finished(self, *, node_id, node_type, index, status, duration_ms, total_tokens, cost, error):
        self.emit("node_failed" if status == "failed" else "node_completed", {
            "node_id": node_id, "node_type": node_type, "index": index, "status": status,
            "duration_ms": duration_ms, "total_tokens": total_tokens, "cost": str(cost), "error": error or None,
        })

    # --- a run ended from outside its process (the recovery sweep) ------------------------------------
    def nodes_interrupted(self, *, error: str) -> None:
        """Nodes a dead worker left running fail with `error`, keeping what they recorded (call inside the
        sweep's transaction, before the terminal event)."""
        now = timezone.now()
        for row in NodeExecution.objects.filter(execution=self.execution, status=NodeExecution.Status.RUNNING):
            duration_ms = max(0, int((now - row.started_at).total_seconds() * 1000))
            NodeExecution.objects.filter(pk=row.pk).update(
                status=NodeExecution.Status.FAILED, completed_at=now, duration_ms=duration_ms, error_message=error)
            self._emit_node_finished(node_id=row.node_id, node_type=row.node_type, index=row.index, status="failed",
                                     duration_ms=duration_ms, total_tokens=row.total_tokens, cost=row.cost,
                                     error=error)

    def recorded_so_far(self) -> tuple[Usage, int, str]:
        """What the run's ledger holds: its usage summed over every recorded LLM call, their number, and the
        last text a model node produced (its output summary): all a sweep can know of a dead run."""
        usage, count = Usage(), 0
        for row in LLMCall.objects.filter(execution=self.execution).order_by("id"):
            call = Usage(
                prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                cached_prompt_tokens=row.cached_prompt_tokens, reasoning_tokens=row.reasoning_tokens,
                cost=row.cost, estimated=row.estimated, provider_cost=row.provider_cost, raw=row.usage_raw,
            )
            usage += call
            self.last_call = Call(row.provider, row.model, call, row.duration_ms)
            count += 1
        output = NodeExecution.objects.filter(
            execution=self.execution, node_type="model", status=NodeExecution.Status.COMPLETED,
        ).order_by("-index").values_list("output", flat=True).first()
        text = output.get("content", "") if isinstance(output, dict) else ""
        return usage, count, text if isinstance(text, str) else ""

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
        with self._write():
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
        with self._write():
            ToolCall.objects.create(
                execution=self.execution, node_id=node.id, tool=tool,
                arguments=_capped(arguments, MAX_ARGUMENT_CHARS), result=_capped(result, MAX_RESULT_CHARS),
                ok=ok, error=error, duration_ms=duration_ms,
            )
            NodeExecution.objects.filter(pk=self.node_row.pk).update(tool_calls=F("tool_calls") + 1)
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(tool_calls=F("tool_calls") + 1)
            self.emit("tool_called", {"node_id": node.id, "tool": tool, "ok": ok, "duration_ms": duration_ms,
                                      "error": error or None})
            self.audit("tool.called", {"node_id": node.id, "tool": tool, "ok": ok, "error": error or None,
                                       "arguments": _capped(arguments, MAX_AUDIT_ARGUMENT_CHARS)})

    def token(self, node: Node, text: str) -> None:
        self.publish("token", {"node_id": node.id, "text": text})

    def limit_exceeded(self, limit: str, value: Any) -> None:
        """Every limit a run passes comes here (timeout_s, max_tool_calls, max_total_tokens, max_steps, and a
        tool outside allowed_tools), whether or not it ends the run."""
        with self._write():
            self.emit("limit_exceeded", {"limit": limit, "value": value})
            self.audit("limit.exceeded", {"limit": limit, "value": value})

    def cancel_requested(self) -> bool:
        if self._cancelled:
            return True
        key = str(self.execution.pk)
        if key in _local_cancels:
            self._cancelled = True
        elif time.monotonic() - self._cancel_polled >= CANCEL_POLL_S:
            self._cancel_polled = time.monotonic()
            row = WorkflowExecution.objects.filter(pk=self.execution.pk).values_list(
                "status", "cancel_requested").first()
            if row is None or row[0] != RUNNING:  # ended elsewhere (the recovery sweep): stop spending
                self._superseded = True
                raise RunInterrupted("the run was ended while it was still running")
            self._cancelled = row[1]
        return self._cancelled

    def deliver_missed(self) -> None:
        """Hand this run's own watcher (a stream's sink) the events another writer persisted after this
        recorder's last one (the sweep's terminal events), so the stream still ends with its terminal event.
        Broadcast watchers already had them from that writer."""
        if self.sink is None:
            return
        for row in ExecutionEvent.objects.filter(execution_id=self.execution.pk, seq__gt=self.seq).order_by("seq"):
            try:
                self.sink(event_envelope(execution_id=self.execution.pk, event=row.event, data=row.data,
                                         seq=row.seq, ts=row.created_at))
            except Exception:  # noqa: BLE001 - a gone watcher never breaks a run
                return

    def heartbeat_start(self) -> None:
        heartbeat.add(self.execution.pk)

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
        heartbeat.discard(self.execution.pk)
        with _local_cancels_lock:
            _local_cancels.discard(str(self.execution.pk))
