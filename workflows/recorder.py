"""ExecutionRecorder: the database side of a run. It implements the engine's RunHooks with rows and events,
in as few short transactions as the run's live trace allows (SPEC §6, I5, I6):

- A node that finishes before anything happens in it (no model call, tool call, token or wait: start, memory,
  retrieval, conditional, end, ...) is written once, already completed, together with its node_started and
  node_completed events. The run holds such nodes, and the closes of nodes that did wait, in memory and writes
  them with its next write, in that write's transaction: `workflow_started` and the nodes before the first model
  call go out with that model node's start, `end` with the terminal transaction (services.execution_finish).
- A node that waits writes its start, with everything held, before it waits: model, tools and delay nodes as
  they start, any other node when it reaches a checkpoint or streams a token. Watchers see node_started before
  its tokens and tool calls.
- Every LLM call writes its ledger row (LLMCall), the execution's counters and its token_usage event at once, so
  its usage survives a crash (I5); every tool call its ToolCall row, event and audit row. A node's own counters
  are written when it closes; a node left running by a dead worker gets them from the ledger (the sweep).
- Events get their seq as they are written, so the log stays gapless and in order (I6); they are broadcast
  after their transaction commits, in order, in one hand-off.

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
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterator

from django.db import IntegrityError, connections, transaction
from django.db.models import Count, F, Subquery, Sum
from django.utils import timezone
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from analytics.selectors import price_for_call
from audit.services import audit_record
from conversations.models import Message
from conversations.selectors import conversation_history, documents_search
from workflows.engine.graph import Node
from workflows.engine.runtime import LLMCall as Call
from workflows.engine.runtime import RunInterrupted
from workflows.engine.usage import Usage
from workflows.events import Sink, event_envelope, event_publish, events_record
from workflows.models import (
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ToolCall,
    WorkflowExecution,
)

logger = logging.getLogger(__name__)
MAX_ARGUMENT_CHARS = 4000
MAX_AUDIT_ARGUMENT_CHARS = 1000
MAX_RESULT_CHARS = 4000
CANCEL_POLL_S = 0.2
HEARTBEAT_S = 5.0  # the sweep treats a run as orphaned after several missed beats (services.HEARTBEAT_LOST_S)
RUNNING = WorkflowExecution.Status.RUNNING
# Node types that wait on something outside the run (a provider, a tool, the clock): they write their start as
# they start. Any other node writes it when it waits after all (a checkpoint, a token), else finishes unwritten.
WAITING_NODE_TYPES = frozenset({"model", "tools", "delay"})
USAGE_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost")  # what the LLMCall ledger sums up
COUNTERS = (*USAGE_SUMS, "llm_calls", "tool_calls")  # a node's and an execution's

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


def _no_usage() -> dict:
    return {name: Decimal("0") if name == "cost" else 0 for name in COUNTERS}


@dataclass
class _OpenNode:
    """The node running now: its start is written (row_pk) only once it waits or the run writes something."""

    node: Node
    index: int
    started_at: datetime
    clock: float
    row_pk: int | None = None
    usage: dict = field(default_factory=_no_usage)


class ExecutionRecorder:
    def __init__(self, execution: WorkflowExecution, *, sink: Sink | None = None, claimed: bool = False):
        """`claimed`: the caller has just claimed the run from `pending` (execution_run): its event log is empty
        and it was not cancelled, so neither is read again."""
        self.execution = execution
        self.sink = sink
        self.seq = 0 if claimed else execution.events.count()  # the last seq written
        self.index = 0
        self.open: _OpenNode | None = None
        self.last_call: Call | None = None
        self.tool_calls = execution.tool_calls  # ToolCall rows recorded for the run (only the run writes the count)
        # Held until the run's next write (see the module docstring): node rows to insert (field dicts), closes of
        # nodes already written (pk, changes), events (name, data, when), audit rows (action, data).
        self._rows: list[dict] = []
        self._closes: list[tuple[int, dict]] = []
        self._events: list[tuple[str, dict, datetime]] = []
        self._audits: list[tuple[str, dict]] = []
        self._prices: dict[tuple[str, str], Any] = {}
        self._cancel_polled = time.monotonic() if claimed else 0.0
        self._cancelled = False
        self._superseded = False

    # --- events and audit rows: held, then written with the run's next write --------------------------
    def emit(self, event: str, data: dict) -> None:
        """A persisted event; it gets its seq, and is broadcast, with the run's next write."""
        self._events.append((event, data, timezone.now()))

    def audit(self, action: str, data: dict) -> None:
        """The run's audit row, written with the run's next write (with the rows and event it describes)."""
        self._audits.append((action, data))

    def publish(self, event: str, data: dict) -> None:
        """An event that is broadcast but not part of the run's persisted log (token, conversation_updated)."""
        envelope = event_envelope(execution_id=self.execution.pk, event=event, data=data, seq=None)
        event_publish(envelope, sink=self.sink, owner_id=self.execution.owner_id)

    # --- writing ----------------------------------------------------------------------------------------
    def _holding(self) -> bool:
        return bool(self._rows or self._closes or self._events or self._audits) or (
            self.open is not None and self.open.row_pk is None)

    @contextmanager
    def _step(self) -> Iterator[None]:
        """One write of the run's trace in one transaction: everything held (the running node's start included),
        then the step's own rows, then every event and audit row. Refused once the run has been ended elsewhere;
        if it fails, what was held before it is held again and the step's own events are dropped."""
        if self._superseded:
            raise RunInterrupted("the run was ended while it was still running")
        try:
            with self.kept_on_failure(), transaction.atomic():
                self._write_nodes()  # first: the step's rows may refer to the running node's
                yield
                self.write_held()
                self.write_audits()
        except IntegrityError:
            if WorkflowExecution.objects.filter(pk=self.execution.pk, status=RUNNING).exists():
                raise
            self._superseded = True
            raise RunInterrupted("the run was ended while it was still running") from None

    @contextmanager
    def kept_on_failure(self) -> Iterator[None]:
        """Around a transaction that writes what the run holds: if it fails, nothing of it was written, so what
        was held before it is held again (and events or audit rows it added are dropped)."""
        opened = self.open
        held = (list(self._rows), list(self._closes), list(self._events), list(self._audits), self.seq,
                opened, opened.row_pk if opened is not None else None)
        try:
            yield
        except BaseException:
            self._rows, self._closes, self._events, self._audits, self.seq, self.open, row_pk = held
            if opened is not None:
                opened.row_pk = row_pk
            raise

    def flush(self) -> None:
        """Write what the run holds now, in one transaction."""
        if self._holding():
            with self._step():
                pass

    def write_held(self) -> None:
        """Write the trace the run holds, in the caller's transaction: node rows (the running node's start
        included) and closes, then events with the next seqs. Audit rows wait for write_audits."""
        self._write_nodes()
        if self._events:
            events_record(execution_id=self.execution.pk, first_seq=self.seq + 1, items=self._events, sink=self.sink,
                          owner_id=self.execution.owner_id)
            self.seq += len(self._events)
            self._events = []

    def write_audits(self) -> None:
        """Write the audit rows the run holds, in the caller's transaction, as its last statements: from the
        first of them to the commit every other audited write waits (the chain has one head)."""
        execution = self.execution
        for action, data in self._audits:
            audit_record(action=action, actor=execution.owner,
                         actor_type="schedule" if execution.schedule_id else "user", target=execution,
                         correlation_id=execution.correlation_id, data=data)
        self._audits = []

    def _write_nodes(self) -> None:
        opened = self.open
        if opened is not None and opened.row_pk is None:
            self._rows.append(self._node_fields(opened, status=NodeExecution.Status.RUNNING))
        if self._rows:
            rows = NodeExecution.objects.bulk_create(
                [NodeExecution(execution_id=self.execution.pk, **fields) for fields in self._rows])
            if opened is not None and opened.row_pk is None:
                opened.row_pk = rows[-1].pk or NodeExecution.objects.values_list("pk", flat=True).get(
                    execution_id=self.execution.pk, index=opened.index)  # a backend without INSERT … RETURNING
            self._rows = []
        for pk, changes in self._closes:
            NodeExecution.objects.filter(pk=pk).update(**changes)
        self._closes = []

    def discard_held(self) -> None:
        """The run was ended by another writer: what it still holds will never be written."""
        self._rows, self._closes, self._events, self._audits = [], [], [], []
        self.open = None

    def _node_fields(self, opened: _OpenNode, *, status: str, **more) -> dict:
        return {"index": opened.index, "node_id": opened.node.id, "node_type": opened.node.type, "status": status,
                "started_at": opened.started_at, **opened.usage, **more}

    def started(self, data: dict) -> None:
        self.emit("workflow_started", data)
        self.audit("execution.started", {"workflow_type": data["workflow_type"], "mode": self.execution.mode,
                                         "provider": data["provider"], "model": data["model"]})

    # --- RunHooks -------------------------------------------------------------------------------------
    def node_started(self, node: Node) -> None:
        self.index += 1
        self.open = _OpenNode(node=node, index=self.index, started_at=timezone.now(), clock=time.monotonic())
        self.emit("node_started", {"node_id": node.id, "node_type": node.type, "index": self.index})
        if node.type in WAITING_NODE_TYPES:
            self.flush()

    def node_finished(self, node: Node, *, status: str, output: dict, error: str = "") -> None:
        opened, self.open = self.open, None
        if opened is None:  # no node is open (node_started was not called): nothing to close
            return
        duration_ms = int((time.monotonic() - opened.clock) * 1000)
        closed = {"status": status, "completed_at": timezone.now(), "duration_ms": duration_ms,
                  "output": _capped(output, MAX_RESULT_CHARS), "error_message": error}
        if opened.row_pk is None:  # nothing happened in it: one row, already completed
            self._rows.append(self._node_fields(opened, **closed))
        else:
            counters = {name: F(name) + value for name, value in opened.usage.items() if value}
            self._closes.append((opened.row_pk, {**closed, **counters}))
        self._emit_node_finished(node_id=node.id, node_type=node.type, index=opened.index, status=status,
                                 duration_ms=duration_ms, total_tokens=opened.usage["total_tokens"],
                                 cost=opened.usage["cost"], error=error)

    def node_abandoned(self, *, error: str) -> None:
        """A node still open when the run ends (its hooks never closed it: writing its start failed, or the
        engine stopped inside it) ends as failed."""
        if self.open is not None:
            self.node_finished(self.open.node, status=NodeExecution.Status.FAILED, output={}, error=error)

    def _emit_node_finished(self, *, node_id, node_type, index, status, duration_ms, total_tokens, cost, error):
        self.emit("node_failed" if status == "failed" else "node_completed", {
            "node_id": node_id, "node_type": node_type, "index": index, "status": status,
            "duration_ms": duration_ms, "total_tokens": total_tokens, "cost": str(cost), "error": error or None,
        })

    # --- a run ended from its ledger (the recovery sweep, or a run whose own ending failed) ---------------
    def nodes_interrupted(self, *, error: str) -> None:
        """Nodes left running fail with `error`, with the counters their ledger rows add up to (a node's own
        counters are written when it closes). Call inside the ending transaction, before the terminal event."""
        now = timezone.now()
        for row in NodeExecution.objects.filter(execution=self.execution, status=NodeExecution.Status.RUNNING):
            duration_ms = max(0, int((now - row.started_at).total_seconds() * 1000))
            sums = LLMCall.objects.filter(node_execution=row).aggregate(
                llm_calls=Count("id"), **{name: Sum(name) for name in USAGE_SUMS})
            counters = {**{name: sums[name] or 0 for name in (*USAGE_SUMS, "llm_calls")},
                        "cost": sums["cost"] or Decimal("0")}
            # Tool calls name their node, not its pass: this pass's are those since it started.
            counters["tool_calls"] = ToolCall.objects.filter(
                execution=self.execution, node_id=row.node_id, created_at__gte=row.started_at).count()
            NodeExecution.objects.filter(pk=row.pk).update(
                status=NodeExecution.Status.FAILED, completed_at=now, duration_ms=duration_ms, error_message=error,
                **counters)
            self._emit_node_finished(node_id=row.node_id, node_type=row.node_type, index=row.index, status="failed",
                                     duration_ms=duration_ms, total_tokens=counters["total_tokens"],
                                     cost=counters["cost"], error=error)

    def recorded_so_far(self) -> tuple[Usage, int, str]:
        """What the run's ledger holds: its usage summed over every recorded LLM call, their number, and the
        last text a model node produced (its output summary): all a sweep can know of a dead run. Its tool calls
        are counted too (self.tool_calls)."""
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
        self.tool_calls = ToolCall.objects.filter(execution=self.execution).count()
        output = NodeExecution.objects.filter(
            execution=self.execution, node_type="model", status=NodeExecution.Status.COMPLETED,
        ).order_by("-index").values_list("output", flat=True).first()
        text = output.get("content", "") if isinstance(output, dict) else ""
        return usage, count, text if isinstance(text, str) else ""

    def llm_called(self, node: Node, call: Call) -> None:
        usage = call.usage
        opened = self.open
        with self._step():
            LLMCall.objects.create(
                execution_id=self.execution.pk, node_execution_id=opened.row_pk if opened else None,
                provider=call.provider, model=call.model, **usage.token_fields(),
                cached_prompt_tokens=usage.cached_prompt_tokens, reasoning_tokens=usage.reasoning_tokens,
                cost=usage.cost, provider_cost=usage.provider_cost, estimated=usage.estimated, usage_raw=usage.raw,
                duration_ms=call.duration_ms, created_at=timezone.now(),
            )
            # The execution's counters move with the ledger (a run in progress shows its usage); its tool count
            # rides along (only this run writes it).
            WorkflowExecution.objects.filter(pk=self.execution.pk).update(
                prompt_tokens=F("prompt_tokens") + usage.prompt_tokens,
                completion_tokens=F("completion_tokens") + usage.completion_tokens,
                total_tokens=F("total_tokens") + usage.total_tokens, cost=F("cost") + usage.cost,
                llm_calls=F("llm_calls") + 1, tool_calls=self.tool_calls,
            )
            self.emit(
                "token_usage",
                {"node_id": node.id, "provider": call.provider, "model": call.model, **usage.as_event_data()},
            )
        self.last_call = call
        if opened is not None:
            for name, value in (*usage.token_fields().items(), ("cost", usage.cost), ("llm_calls", 1)):
                opened.usage[name] += value

    def tool_called(self, node: Node, *, tool: str, arguments: dict, result: str, ok: bool, error: str,
                    duration_ms: int) -> None:
        with self._step():
            ToolCall.objects.create(
                execution_id=self.execution.pk, node_id=node.id, tool=tool,
                arguments=_capped(arguments, MAX_ARGUMENT_CHARS), result=_capped(result, MAX_RESULT_CHARS),
                ok=ok, error=error, duration_ms=duration_ms,
            )
            self.emit("tool_called", {"node_id": node.id, "tool": tool, "ok": ok, "duration_ms": duration_ms,
                                      "error": error or None})
            self.audit("tool.called", {"node_id": node.id, "tool": tool, "ok": ok, "error": error or None,
                                       "arguments": _capped(arguments, MAX_AUDIT_ARGUMENT_CHARS)})
        self.tool_calls += 1  # on the execution row with the next LLM call or the end of the run
        if self.open is not None:
            self.open.usage["tool_calls"] += 1

    def token(self, node: Node, text: str) -> None:
        if self._holding():  # the node's start reaches watchers before its tokens
            self.flush()
        self.publish("token", {"node_id": node.id, "text": text})

    def limit_exceeded(self, limit: str, value: Any) -> None:
        """Every limit a run passes comes here (timeout_s, max_tool_calls, max_total_tokens, max_steps, and a
        tool outside allowed_tools), whether or not it ends the run."""
        with self._step():
            self.emit("limit_exceeded", {"limit": limit, "value": value})
            self.audit("limit.exceeded", {"limit": limit, "value": value})

    def cancel_requested(self) -> bool:
        if self.open is not None and self.open.row_pk is None:
            self.flush()  # a node checks in the middle of its work: it is about to wait, show that it started
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
        execution = self.execution
        if execution.conversation_id is None:
            return []
        before = None
        if execution.input_data.get("message"):
            # The turn's own user message is in the conversation (execution_create saved it): the history ends
            # before it. Its sequence is looked up in the same query.
            before = Subquery(Message.objects.filter(execution_id=execution.pk, role=Message.Role.USER).order_by(
                "sequence").values("sequence")[:1])
        rows = conversation_history(conversation_id=execution.conversation_id, before_sequence=before, limit=limit)
        kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
        return [kinds[row.role](row.content) for row in rows]

    def documents(self, query: str, limit: int) -> list[dict]:
        return documents_search(owner_id=self.execution.owner_id, query=query, limit=limit)

    def price(self, provider: str, model: str):
        """Prices are read once per (provider, model) in a run: its calls are priced alike."""
        key = (provider, model)
        if key not in self._prices:
            self._prices[key] = price_for_call(provider=provider, model=model)
        return self._prices[key]

    def forget(self) -> None:
        heartbeat.discard(self.execution.pk)
        with _local_cancels_lock:
            _local_cancels.discard(str(self.execution.pk))
