"""ExecutionRecorder: the database side of a run, one unit of work over its trace and events, written just before the
run next waits and in its terminal transaction; once a write collides with the recovery sweep's, every later one is
refused (RunInterrupted): docs/architecture.md#when-a-run-writes (I5, I6). run_recorder makes its collaborators."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterator

from django.db import IntegrityError, connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from audit.services import audit_queue, audit_queue_along, audit_queued
from core.db import connections_give_back, retried_on_conflict, statements_run, write_atomic
from core.errors import BudgetExceeded
from engine.graph import Node
from engine.hooks import Attempt, CallStarted
from engine.hooks import LLMCall as Call
from engine.runtime import RunInterrupted
from workflows.cancels import CancelWatch
from workflows.events import event_rows, events_published_on_commit
from workflows.heartbeat import heartbeat
from workflows.ledger import LedgerHooks, RunLedger
from workflows.models import NodeExecution, WorkflowExecution
from workflows.run_reads import ReadHooks, RunReads
from workflows.run_streams import StreamHooks
from workflows.run_tools import RunTools, ToolCallHooks, tool_rows_servers_kept
from workflows.spending import BudgetGuard
from workflows.statements import (
    execution_counters_add,
    llm_calls_insert,
    nodes_upsert,
    provider_attempts_insert,
    tool_calls_insert,
)
from workflows.trace_rows import (
    MAX_RESULT_CHARS,
    OpenNode,
    attempt_row,
    audit_rows,
    capped,
    llm_call_row,
    no_usage,
    node_finished_event,
    node_row,
    node_rows_bound,
    one_at_a_time,
)
from workflows.writer import WriteBehind

logger = logging.getLogger(__name__)
RUNNING = WorkflowExecution.Status.RUNNING
# Node types that wait on something outside the run (the clock): the run writes what it holds as they start. A
# model call (in a `model` node or any other) writes as it starts (model_call_started), with its prompt.
WAITING_NODE_TYPES = frozenset({"delay"})


def run_recorder(execution: WorkflowExecution, *, fresh: bool = False, user_message=None, prices: dict | None = None,
                 checkpoints=None, spans=None) -> ExecutionRecorder:
    """The recorder of a run with its collaborators, made for it: `user_message`, the turn's own message; `prices`,
    (provider, model) → price already read for this run; `checkpoints`, the CheckpointHold of its graph's thread;
    `spans`, its RunSpans when tracing is on (workflows.run_spans)."""
    reads = RunReads(execution, user_message=user_message, prices=prices)
    return ExecutionRecorder(execution, reads=reads, budget=BudgetGuard(execution.pk, execution.budget_holds),
                             ledger=RunLedger(execution, price=reads.price), checkpoints=checkpoints, fresh=fresh,
                             tools=RunTools(execution), spans=spans)


class ExecutionRecorder(StreamHooks, ToolCallHooks, ReadHooks, LedgerHooks):
    """The engine's RunHooks with rows and events: nodes and model calls here; tool calls, reads and what the run's
    rows hold mixed in (workflows.run_tools, run_reads, ledger), each row built by workflows.trace_rows."""

    def __init__(self, execution: WorkflowExecution, *, reads: RunReads, budget: BudgetGuard, ledger: RunLedger,
                 checkpoints=None, fresh: bool = False, tools: RunTools | None = None, spans=None):
        """`fresh`: this process has just created or claimed the run, so its event log is empty and it was not
        cancelled: neither is read. `checkpoints`: the CheckpointHold whose rows ride on this recorder's writes
        (workflows.checkpointer), or None (nothing is held)."""
        self.execution = execution
        self.reads, self.budget, self.ledger, self.checkpoints = reads, budget, ledger, checkpoints
        self.run_tools = tools or RunTools(execution)  # the MCP tools it may call (workflows.run_tools)
        self.spans = spans  # its OpenTelemetry spans (workflows.run_spans), told of each moment below; None: off
        self.seq = 0 if fresh else execution.events.count()
        self.index = 0
        self._lock = threading.RLock()
        self._local = threading.local()  # the node open on each thread (parallel branches: one per branch)
        self._opened: dict[int, OpenNode] = {}  # every open node, by index
        self._thread = threading.get_ident()  # the run's own; LangGraph runs parallel branches on others
        self.last_call: Call | None = None
        self.calls: list[Call] = []  # every LLM call of the run made here (the rollups book them at its end)
        self.tool_calls = execution.tool_calls
        self._node_pks: dict[int, int] = {}  # index → pk of node rows already written
        # Held until the run's next write: node rows by index, LLM calls (field dicts, with their node's index),
        # tool call rows, the execution's counters to add, events (name, data, when), audit rows (action, data).
        self._nodes: dict[int, dict] = {}
        self._calls: list[tuple[int | None, dict]] = []
        self._attempts: list[tuple[int | None, dict]] = []  # a routed call's tries (ProviderAttempt), likewise
        self._tools: list[dict] = []
        self._tool_costs: dict[str, Decimal] = {}  # the run's priced tool calls' cost, per tool
        self._added = no_usage()
        self._events: list[tuple[str, dict, datetime]] = []
        self._audits: list[tuple[str, dict]] = []
        self._live_after: list[dict] = []  # published (not persisted) right after the events written next
        # Tokens streamed while a write no writer took was folded into the next (settled): each published, not
        # persisted, after the first `position` of the events held: (position, envelope).
        self._live: list[tuple[int, dict]] = []
        self._checkpoints_taken: list[dict] = []  # the graph's checkpoint rows in the write under way
        self._call_since_checkpoints = False  # an LLM call ended since the graph's checkpoints were last written
        # node id → (index, started_at, what its row counted) of a node waiting for input
        self._paused: dict[str, tuple[int, datetime, dict]] = {}
        self._calls_started = 0
        self.cancels = CancelWatch(execution.pk, fresh=fresh)  # (workflows.cancels)
        self.writing = WriteBehind()  # the write made as a model call goes out (workflows.writer)
        self._superseded = False

    @property
    def user_message(self):
        """The turn's own user message (booked with the run's end), if it has one."""
        return self.reads.user_message

    @property
    def open(self) -> OpenNode | None:
        """The node open on this thread, else the run's one open node (a tool run on an executor's thread, say)."""
        opened = getattr(self._local, "open", None)
        if opened is None and len(self._opened) == 1:
            return next(iter(self._opened.values()))
        return opened

    @open.setter
    def open(self, opened: OpenNode | None) -> None:
        mine = getattr(self._local, "open", None)
        if mine is not None:
            self._opened.pop(mine.index, None)
        if opened is not None:
            self._opened[opened.index] = opened
        self._local.open = opened

    def _open_close(self) -> OpenNode | None:
        """The open node (see `open`), no longer open."""
        opened, self.open = self.open, None
        if opened is not None:
            self._opened.pop(opened.index, None)
        return opened

    # --- holding --------------------------------------------------------------------------------------
    @one_at_a_time
    def emit(self, event: str, data: dict) -> None:
        """A persisted event; it gets its seq, and is published, with the run's next write."""
        self._events.append((event, data, timezone.now()))

    @one_at_a_time
    def audit(self, action: str, data: dict) -> None:
        self._audits.append((action, data))

    def _holding(self) -> bool:
        return bool(self._nodes or self._calls or self._attempts or self._tools or self._events or self._live)

    # --- writing ----------------------------------------------------------------------------------------
    @retried_on_conflict
    def _flush(self) -> None:
        """Write what the run holds, in one transaction (before the run waits); `flush` with the recorder's lock."""
        if not self._holding():
            return
        if self._superseded:
            raise RunInterrupted("the run was ended while it was still running")
        # Audit rows wait for the run's pause or end (the recovery sweep appends them from its rows), so no write
        # before a wait queues on the audit chain's head. Without a call to count, what the run holds rides on one
        # statement on PostgreSQL (write_held), needing no transaction around it: the write before a first model call.
        try:
            with self.kept_on_failure(), write_atomic(one_statement=not self._added["llm_calls"]):
                self.write_held(audits="later", lean=True)
                if self._added["llm_calls"]:  # a run in progress shows its usage (its tool count rides along)
                    execution_counters_add(self.execution.pk, tool_calls=self.tool_calls, added=self.counters_added())
        except IntegrityError:
            if not transaction.get_autocommit() and transaction.get_rollback():
                raise  # (a statement with no savepoint failed in its caller's transaction: the caller's to undo)
            if WorkflowExecution.objects.filter(pk=self.execution.pk, status=RUNNING).exists():
                raise
            self._superseded = True
            raise RunInterrupted("the run was ended while it was still running") from None

    flush = one_at_a_time(_flush)

    def counters_added(self) -> dict:
        """What the run holds adds to the execution's counters (tool_calls aside: only the run writes it, whole),
        forgotten from the hold."""
        added, self._added = self._added, no_usage()
        return {name: value for name, value in added.items() if value and name != "tool_calls"}

    def counters_increments(self) -> dict:
        """counters_added as an update() adds them to what is stored (never lost to a concurrent writer)."""
        return {name: F(name) + value for name, value in self.counters_added().items()}

    @contextmanager
    def kept_on_failure(self) -> Iterator[None]:
        """Around a transaction that writes what the run holds: if it fails, nothing of it was written, so the
        run holds again what it held before (and events or audit rows added meanwhile are dropped)."""
        held = (dict(self._nodes), list(self._calls), list(self._attempts), list(self._tools), dict(self._added),
                list(self._events), list(self._audits), self.seq, dict(self._node_pks), list(self._live))
        try:
            yield
        except BaseException:
            if self._checkpoints_taken:
                self.checkpoints.give_back(self._checkpoints_taken)
                self._call_since_checkpoints, self._checkpoints_taken = True, []
            (self._nodes, self._calls, self._attempts, self._tools, self._added, self._events, self._audits, self.seq,
             self._node_pks, self._live) = held
            raise
        self._checkpoints_taken = []

    def write_held(self, *, audits: str = "all", lean: bool = False, riding: list[tuple[str, list]] = (),
                   watchable: bool = True) -> None:
        """Write the held trace in the caller's transaction: node rows, LLM calls, tool calls, the graph's
        checkpoints (workflows.checkpointer; `lean`, before a wait: only after an LLM call), events with the next
        seqs, and the audit rows, queued for the chain (on PostgreSQL by the same statement; audits="later": held
        for the run's next pause or end). `riding`: the caller's statements, run after them in their order; not
        `watchable`: they insert the run's row (events_published_on_commit)."""
        execution_id = self.execution.pk
        checkpoints = self._checkpoints_take() if self._call_since_checkpoints or not lean else ()
        # On PostgreSQL everything rides on one statement (a data-modifying WITH): the node rows' upsert (ids back, a
        # new node's to its calls), calls, events, checkpoints. Elsewhere a statement per table, a new node first.
        events = (event_rows(execution_id=execution_id, first_seq=self.seq + 1, items=self._events),) \
            if self._events else ()
        nodes = [{"execution_id": execution_id, "index": index, **fields}
                 for index, fields in sorted(self._nodes.items())]
        parents = {index for index, _ in (*self._calls, *self._attempts) if index is not None}
        unwritten = not parents <= self._node_pks.keys()
        joined = unwritten and connection.vendor == "postgresql" and parents <= self._nodes.keys()
        if nodes and unwritten and not joined:
            self._nodes_write(nodes)
            nodes = []
        along = [
            *([nodes_upsert.bound(nodes)] if joined else []),
            *(node_rows_bound(insert, held, execution_id=execution_id, node_pks=None if joined else self._node_pks)
              for insert, held in ((llm_calls_insert, self._calls), (provider_attempts_insert, self._attempts))
              if held),
            *([tool_calls_insert.bound([{"execution_id": execution_id, **fields}
                                        for fields in tool_rows_servers_kept(self._tools)])]
              if self._tools else []),
            *events, *checkpoints]
        queued = False
        if audits == "all" and self._audits:
            rows, self._audits = audit_rows(self.execution, self._audits), []
            if (statement := audit_queue_along(rows)) is not None:
                along.append(statement)
                queued = True
            else:  # appended at once (SQLite: one writer at a time)
                audit_queue(rows)
        at = 1 if joined else 0  # (after the nodes' upsert, along_0:) run last, in their order (statements_run)
        along[at:at] = reversed(riding)
        if nodes:
            self._nodes_write(nodes, along=along, joined=joined)
        elif along:
            statements_run(along[-1], along[:-1])
        self._nodes, self._calls, self._attempts, self._tools = {}, [], [], []
        if queued:  # (the chainer, woken once they commit: at once when the statement was alone)
            audit_queued()
        if self._events or self._live:
            events_published_on_commit(execution_id=execution_id, first_seq=self.seq + 1, items=self._events,
                                       owner_id=self.execution.owner_id, owner_only=tuple(self._live_after),
                                       watchable=watchable, live=self._live)
            self._live_after, self._live = [], []
            self.seq += len(self._events)
            self._events = []

    def _nodes_write(self, nodes: list[dict], *, along: list[tuple[str, list]] = (), joined: bool = False) -> None:
        """Node rows, upserted, returning their ids (`joined`: the upsert is `along`'s first part, its calls read)."""
        main = ('SELECT "id", "index" FROM "along_0"', []) if joined else nodes_upsert.bound(nodes)
        self._node_pks.update((index, pk) for pk, index in statements_run(main, along, fetch=True))

    def _checkpoints_take(self) -> tuple:
        """The graph's checkpoints held since the last write (workflows.checkpointer), as rows to insert."""
        if self.checkpoints is None or not (taken := self.checkpoints.take()):
            return ()
        self._checkpoints_taken, self._call_since_checkpoints = taken, False
        return (self.checkpoints.statement(taken),)

    def discard_held(self) -> None:
        """The run was ended by another writer: what it still holds will never be written."""
        self._nodes, self._calls, self._attempts, self._tools, self._events, self._audits = {}, [], [], [], [], []
        self._added, self.open, self._opened, self._live = no_usage(), None, {}, []

    def _hold_node(self, opened: OpenNode, **fields) -> None:
        self._nodes[opened.index] = node_row(opened, **fields)

    def started(self, data: dict) -> None:
        self.emit("workflow_started", data)
        self.audit("execution.started", {"workflow_type": data["workflow_type"], "mode": self.execution.mode,
                                         "provider": data["provider"], "model": data["model"]})

    # --- RunHooks -------------------------------------------------------------------------------------
    @one_at_a_time
    def node_started(self, node: Node) -> None:
        usage = no_usage()
        if node.id in self._paused:  # a node that waited for input runs again on resume: its row is its own again,
            index, started_at, counted = self._paused.pop(node.id)  # with what it counted before it paused
            clock = time.monotonic() - (timezone.now() - started_at).total_seconds()
            usage.update(counted)
        else:
            self.index += 1
            index, started_at, clock = self.index, timezone.now(), time.monotonic()
        self.open = OpenNode(node=node, index=index, started_at=started_at, clock=clock, usage=usage)
        if self.spans is not None:
            self.spans.node_started(index, node)
        self.emit("node_started", {"node_id": node.id, "node_type": node.type, "index": index})
        if node.type in WAITING_NODE_TYPES:
            self._wait_ahead()

    @one_at_a_time
    def model_call_started(self, node: Node, call: CallStarted) -> None:
        """A model call is about to wait: its node row, written now with what the run holds, names it and its
        prompt estimate; the heartbeat carries what it streams. A crash mid-call then loses none of it (I5)."""
        opened = self.open
        if self.spans is not None:
            self.spans.call_started(opened.index if opened else None, call)
        if opened is not None:
            self._calls_started += 1
            opened.in_flight = {"call": f"{opened.index}.{self._calls_started}", "provider": call.provider,
                                "model": call.requested_model, "prompt_tokens": call.prompt_tokens,
                                "prompt_version": str(opened.prompt_version_id or "") or None}
            self._hold_node(opened)  # (re)written with the marker: a second call in one node rewrites its row
            heartbeat.stream(self.execution.pk, call=opened.in_flight["call"], so_far=call.streamed_so_far)
        self._wait_ahead(behind=not self.budget.hard)
        if self.budget.hard:  # the reservation covers the run's spend so far and this call's worst case, or it stops
            refused = self.budget.cover(call, spent=self.spent(),
                                        price=self.reads.price(call.provider, call.requested_model))
            if refused is not None:  # (the node's end, next, clears the call it was to make)
                self._budget_stop(refused)

    def reserved(self, holds: list[dict]) -> None:
        """The run's reservations, made with its row after its start was recorded (a run written whole at its end)."""
        self.budget = BudgetGuard(self.execution.pk, holds)

    def _budget_stop(self, budget_id: str) -> None:
        self.limit_exceeded("budget", budget_id)
        raise BudgetExceeded("budget", budget_id, f"the run reached budget {budget_id}")

    def _wait_ahead(self, *, behind: bool = False) -> None:
        """The run is about to wait: its running node gets its row, everything held is written, and its database
        connection goes back to the pool while it waits. `behind`: written on a writer thread while the run goes
        on into its wait, unless that is inside a caller's transaction (workflows.writer)."""
        opened = self.open
        if opened is not None and opened.index not in self._node_pks and opened.index not in self._nodes:
            self._hold_node(opened)
        if behind and self._holding() and not connection.in_atomic_block:
            self.writing.hand(self._flush, self._fragments_publish)
        else:
            self.flush()
        connections_give_back()

    @one_at_a_time
    def node_finished(self, node: Node, *, status: str, output: dict, error: str = "", error_type: str = "") -> None:
        opened = self._open_close()
        self._branch_done()
        if opened is None:  # no node is open (node_started was not called): nothing to close
            return
        if opened.in_flight is not None:  # its call ended without usage (no answer): the row loses the marker
            opened.in_flight = None
            heartbeat.stream_ended(self.execution.pk)
        duration_ms = int((time.monotonic() - opened.clock) * 1000)
        if self.spans is not None:
            self.spans.node_ended(opened.index, status=status, error=error, usage=opened.usage, error_type=error_type)
        self._hold_node(opened, status=status, completed_at=timezone.now(), duration_ms=duration_ms,
                        output=capped(output, MAX_RESULT_CHARS), error_message=error)
        self._emit_node_finished(node_id=node.id, node_type=node.type, index=opened.index, status=status,
                                 duration_ms=duration_ms, total_tokens=opened.usage["total_tokens"],
                                 cost=opened.usage["cost"], error=error)

    @one_at_a_time
    def node_paused(self, node: Node) -> None:
        """The open node waits for input (human_input): its row stays `running`, marked so, until the run resumes."""
        opened = self._open_close()
        self._branch_done()
        if opened is not None:
            self._hold_node(opened, output={"waiting_for_input": True})
            if self.spans is not None:
                self.spans.node_ended(opened.index, status="waiting", error="", usage=opened.usage)

    def _branch_done(self) -> None:
        """A node of a parallel branch ended on one of LangGraph's threads, which may end without a word: the
        database connections it opened (its cancel polls and writes) are closed now, never left to leak."""
        if threading.get_ident() != self._thread:
            connections.close_all()

    def node_abandoned(self, *, error: str) -> None:
        """A node still open when the run ends (the engine stopped inside it) ends as failed."""
        if self.open is not None:
            self.node_finished(self.open.node, status=NodeExecution.Status.FAILED, output={}, error=error)

    def _emit_node_finished(self, **ended) -> None:
        self.emit(*node_finished_event(**ended))

    def llm_called(self, node: Node, call: Call) -> None:
        with self._lock:
            opened = self.open
            # The write handed as this call went out, if no writer took it yet (the model answered before the run let
            # go of the GIL), is folded into the run's next: nothing waited, and no other call is in flight.
            try:
                self.settled(fold=opened is not None and opened.in_flight is not None
                             and sum(o.in_flight is not None for o in self._opened.values()) == 1)
            finally:  # (a write that failed ends the run: the call is held, for the run's end to write)
                self._llm_called(node, call, opened)

    def _llm_called(self, node: Node, call: Call, opened: OpenNode | None) -> None:
        usage = call.usage
        self._calls.append((opened.index if opened else None, llm_call_row(
            call, prompt_version_id=opened.prompt_version_id if opened else None)))
        if self.spans is not None:
            self.spans.call_ended(opened.index if opened else None, call)
        counted = {**usage.token_fields(), "cost": usage.cost, "llm_calls": 1}
        for name, value in counted.items():
            self._added[name] += value
            if opened is not None:
                opened.usage[name] += value
        if opened is not None and opened.in_flight is not None:
            # The call's row replaces its marker in the same write (normally with the node's end, held next).
            opened.in_flight = None
            heartbeat.stream_ended(self.execution.pk)
            if opened.index in self._node_pks or opened.index in self._nodes:  # (held: its write was folded)
                self._hold_node(opened)
        self._call_since_checkpoints = True
        self.emit("token_usage", {"node_id": node.id, "provider": call.provider, "model": call.model,
                                  **usage.as_event_data(),
                                  **({"message_id": call.message_id} if call.message_id else {})})
        self.last_call = call
        self.calls.append(call)

    @one_at_a_time
    def provider_attempted(self, node: Node, attempt: Attempt) -> None:
        opened = self.open
        self._attempts.append((opened.index if opened else None, attempt_row(attempt)))
        if self.spans is not None:
            self.spans.attempted(opened.index if opened else None, attempt)

    @one_at_a_time
    def node_focus(self, opened: OpenNode | None = None) -> OpenNode | None:
        """Make `opened` (a node still open) the one the next hooks on this thread are about; returns the open
        one. A registered graph's tasks may run at once, their callbacks served on the run's thread."""
        if opened is not None:
            self._opened[opened.index] = opened
            self._local.open = opened
        return self.open

    @one_at_a_time
    def graph_streamed(self, mode: str, namespace: list[str], data: Any) -> None:
        """A registered graph's own stream (LangGraph's protocol events: engine.python_graphs ProtocolEvents), in
        its run's log, an event per part under its mode's name (`values`, `updates`, `custom`, `messages`, ...)."""
        self.emit(mode, {"namespace": namespace, mode: data})

    @one_at_a_time
    def limit_exceeded(self, limit: str, value: Any) -> None:
        """Every limit a run passes comes here, whether or not it ends the run."""
        self.emit("limit_exceeded", {"limit": limit, "value": value})
        self.audit("limit.exceeded", {"limit": limit, "value": value})

    def cancel_requested(self) -> bool:
        with self._lock:  # not after a write under way (one_at_a_time): that write holds the open node's row
            if not self.writing.under_way and self.open is not None and self.open.index not in self._node_pks:
                self._wait_ahead()  # a node checks in the middle of its work: it is about to wait
            try:
                return self.cancels.asked()
            except RunInterrupted:  # ended elsewhere (the recovery sweep): stop spending
                self._superseded = True
                raise

    def heartbeat_start(self) -> None:
        heartbeat.add(self.execution.pk)

    def forget(self) -> None:
        heartbeat.discard(self.execution.pk)
        self.cancels.forget()

    @one_at_a_time
    def retrieved(self, node: Node, record: dict) -> None:
        """A search of knowledge collections, in the run's log (the timeline and the live page show it)."""
        self.emit("retrieval", {"node_id": node.id, **record})
        if self.spans is not None:
            self.spans.retrieved(self.open.index if self.open else None, record)
