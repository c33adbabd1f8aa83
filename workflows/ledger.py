"""What a run's rows already hold, read back: for a run ended from its ledger (the recovery sweep, a run whose own
ending failed) and for a run that goes on in another process (a paused run answered, workflows.services.waiting).
One RunLedger per run, handed to its recorder (workflows.recorder), which holds the events and audit rows of what
it reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Callable

from django.db.models import Count, Q, Sum
from django.utils import timezone

from conversations.models import Message
from engine.hooks import LLMCall as Call
from engine.usage import Usage, priced, usage_cut_short
from workflows.models import LLMCall, NodeExecution, ToolCall

# The MCP tool calls that answered (a built-in's name has no "__"): those booked, and re-priced, like LLM calls.
MCP_ANSWERED = Q(ok=True, tool__contains="__")

USAGE_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost")  # what the LLMCall ledger sums up
NODE_COUNTERS = (*USAGE_SUMS, "llm_calls", "tool_calls")  # what a node's row counts


@dataclass(frozen=True)
class PausedNode:
    """A node row left `running` while its run waits for input: its row is the node's again when it runs on."""

    pk: int
    index: int
    node_id: str
    started_at: datetime
    counted: dict  # what the row counted before the run paused


@dataclass(frozen=True)
class NodesSoFar:
    last_index: int
    paused: list[PausedNode]


@dataclass(frozen=True)
class Unaudited:
    """What a run's rows hold that its audit rows do not yet say (they are written when it pauses or ends)."""

    started: bool  # `execution.started` is missing
    tool_calls: list[dict] = field(default_factory=list)  # ToolCall rows without their `tool.called`


@dataclass(frozen=True)
class Interrupted:
    """Node rows a run left running, now failed: their ending's event data, and what a model call a node was
    waiting on adds to the run's counters (recorded as an estimated LLMCall)."""

    nodes: list[dict]
    added: dict


@dataclass(frozen=True)
class SoFar:
    """What a run's ledger holds: its usage over every recorded LLM call, the calls, its tool calls and the last
    text a model node produced (its output summary, or the partial reply of a call cut short)."""

    usage: Usage  # its LLM calls' and its priced tool calls' (their cost)
    calls: list[Call]
    tool_calls: int
    text: str
    tool_costs: dict[str, Decimal] = field(default_factory=dict)  # the priced tool calls' cost, per tool


class RunLedger:
    def __init__(self, execution, *, price: Callable):
        """`price`: (provider, model) → the price a call recorded from its marker is charged at (RunReads.price)."""
        self.execution = execution
        self._price = price
        self._streamed_text = ""  # what the call in flight had streamed, once recorded (nodes_interrupted)

    def user_message(self) -> Message | None:
        return Message.objects.filter(execution_id=self.execution.pk, role=Message.Role.USER).first()

    def nodes_so_far(self) -> NodesSoFar:
        """A paused run goes on in this process: its nodes are numbered on from its rows, and a node that waited
        gets its row back when it runs again, with what it counted before it paused (a Python graph's node may
        have called its model before its interrupt())."""
        last, paused = 0, []
        for row in NodeExecution.objects.filter(execution=self.execution).values(
                "pk", "index", "node_id", "started_at", "status", "output", *NODE_COUNTERS):
            last = max(last, row["index"])
            if row["status"] == NodeExecution.Status.RUNNING and (row["output"] or {}).get("waiting_for_input"):
                paused.append(PausedNode(pk=row["pk"], index=row["index"], node_id=row["node_id"],
                                         started_at=row["started_at"],
                                         counted={name: row[name] for name in NODE_COUNTERS}))
        return NodesSoFar(last_index=last, paused=paused)

    def unaudited(self) -> Unaudited:
        """A run whose process died before it paused or ended left its audit rows unwritten (they wait for that):
        `execution.started` and a `tool.called` for each ToolCall row past those already audited (rows and their
        audits are written oldest first, so those are the newest)."""
        from audit.models import AuditEvent

        execution = self.execution
        written = list(AuditEvent.objects.filter(
            target_type=execution._meta.model_name, target_id=str(execution.pk),
            action__in=("execution.started", "tool.called")).values_list("action", flat=True))
        rows = ToolCall.objects.filter(execution=execution).order_by("id")[written.count("tool.called"):]
        return Unaudited(
            started=execution.started_at is not None and "execution.started" not in written,
            tool_calls=[{"node_id": row.node_id, "tool": row.tool, "ok": row.ok, "error": row.error,
                         "arguments": row.arguments} for row in rows])

    def nodes_interrupted(self, *, error: str) -> Interrupted:
        """Nodes left running fail with `error`, with the counters their ledger rows add up to; a model call a node
        was waiting on is recorded first (call_in_flight_recorded). Call inside the ending transaction."""
        now = timezone.now()
        ended, added = [], {name: 0 for name in (*USAGE_SUMS, "llm_calls")}
        added["cost"] = Decimal("0")
        for row in NodeExecution.objects.filter(execution=self.execution, status=NodeExecution.Status.RUNNING):
            duration_ms = max(0, int((now - row.started_at).total_seconds() * 1000))
            for name, value in self.call_in_flight_recorded(row, duration_ms=duration_ms).items():
                added[name] += value
            sums = LLMCall.objects.filter(node_execution=row).aggregate(
                llm_calls=Count("id"), **{name: Sum(name) for name in USAGE_SUMS})
            # Tool calls name their node, not its pass: this pass's are those since it started.
            tools = ToolCall.objects.filter(execution=self.execution, node_id=row.node_id,
                                            created_at__gte=row.started_at).aggregate(count=Count("id"), cost=Sum("cost"))
            counters = {**{name: sums[name] or 0 for name in (*USAGE_SUMS, "llm_calls")},
                        "cost": (sums["cost"] or Decimal("0")) + (tools["cost"] or Decimal("0")),
                        "tool_calls": tools["count"]}
            NodeExecution.objects.filter(pk=row.pk).update(
                status=NodeExecution.Status.FAILED, completed_at=now, duration_ms=duration_ms, error_message=error,
                **counters)
            ended.append({"node_id": row.node_id, "node_type": row.node_type, "index": row.index,
                          "status": "failed", "duration_ms": duration_ms, "total_tokens": counters["total_tokens"],
                          "cost": counters["cost"], "error": error})
        return Interrupted(nodes=ended, added={name: value for name, value in added.items() if value})

    def call_in_flight_recorded(self, row: NodeExecution, *, duration_ms: int) -> dict:
        """The model call a node row says it was waiting on when its process died becomes an LLMCall: the prompt
        estimated as the call started and what the heartbeat last carried of its stream, estimated and flagged,
        priced like any call by the model it asked for. Returns what it adds to the run's counters."""
        in_flight = (row.output or {}).get("call_in_flight") if isinstance(row.output, dict) else None
        if not in_flight:
            return {}
        progress = self.execution.stream_progress or {}
        streamed = progress if progress.get("call") == in_flight["call"] else {}
        usage = usage_cut_short(prompt_tokens=in_flight["prompt_tokens"], streamed=streamed)
        usage = priced(usage, self._price(in_flight["provider"], in_flight["model"]))
        LLMCall.objects.create(
            execution_id=self.execution.pk, node_execution=row, provider=in_flight["provider"],
            model=in_flight["model"], requested_model=in_flight["model"], unpriced=usage.unpriced,
            **usage.token_fields(), cost=usage.cost, estimated=True, usage_raw={}, duration_ms=duration_ms,
            prompt_version_id=in_flight.get("prompt_version"), created_at=timezone.now())
        self._streamed_text = streamed.get("text") or ""
        return {**usage.token_fields(), "cost": usage.cost, "llm_calls": 1}

    def so_far(self) -> SoFar:
        """All a sweep can know of a dead run (SoFar)."""
        usage, calls = Usage(), []
        for row in LLMCall.objects.filter(execution=self.execution).order_by("id"):
            call = Usage(
                prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                cached_prompt_tokens=row.cached_prompt_tokens, reasoning_tokens=row.reasoning_tokens,
                cost=row.cost, estimated=row.estimated, provider_cost=row.provider_cost, unpriced=row.unpriced,
                raw=row.usage_raw,
            )
            usage += call
            calls.append(Call(row.provider, row.model, row.requested_model, call, row.duration_ms))
        tool_calls = ToolCall.objects.filter(execution=self.execution).count()
        tool_costs = dict(ToolCall.objects.filter(execution=self.execution).filter(MCP_ANSWERED).values(
            "tool").annotate(sum=Sum("cost")).order_by().values_list("tool", "sum"))
        usage += Usage(cost=sum(tool_costs.values(), Decimal("0")))
        output = NodeExecution.objects.filter(
            execution=self.execution, node_type="model", status=NodeExecution.Status.COMPLETED,
        ).order_by("-index").values_list("output", flat=True).first()
        text = output.get("content", "") if isinstance(output, dict) else ""
        if self._streamed_text:  # the call in flight came after every completed one: its partial reply is the last
            text = self._streamed_text
        return SoFar(usage=usage, calls=calls, tool_calls=tool_calls, text=text if isinstance(text, str) else "",
                     tool_costs=tool_costs)


def calls_by_model(calls: list[Call]) -> list[dict]:
    """A run's LLM calls summed per (provider, model): what the usage rollups book at its end."""
    sums: dict[tuple[str, str], dict] = {}
    for call in calls:
        row = sums.setdefault((call.provider, call.model), {
            "provider": call.provider, "model": call.model, "llm_calls": 0, "prompt_tokens": 0,
            "completion_tokens": 0, "total_tokens": 0, "cached_prompt_tokens": 0, "reasoning_tokens": 0,
            "cost": Decimal("0")})
        row["llm_calls"] += 1
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens",
                     "reasoning_tokens", "cost"):
            row[name] += getattr(call.usage, name)
    return list(sums.values())


class LedgerHooks:
    """What ExecutionRecorder (which mixes LedgerHooks in) takes from its RunLedger (`ledger`): a run resumed in this
    process, or ended from its rows."""

    def resumed(self) -> tuple[Usage, int]:
        """A paused run goes on in this process: its nodes are numbered on from its rows, a node that waited gets
        its row back when it runs again, and what the run recorded before counts (usage, LLM and tool calls)."""
        nodes = self.ledger.nodes_so_far()
        self.index = max(self.index, nodes.last_index)
        for paused in nodes.paused:
            self._node_pks[paused.index] = paused.pk
            self._paused[paused.node_id] = (paused.index, paused.started_at, paused.counted)
        self.reads.user_message = self.ledger.user_message()
        usage, count, _ = self.recorded_so_far()
        return usage, count

    def interrupted(self, *, error: str) -> None:
        """A run ended (or queued again) from its rows, outside its process: its missing audit rows are held again
        first, then nodes left running fail with `error` (a model call one was waiting on recorded, its usage added
        to the run's counters). Call inside the ending transaction, before the terminal event."""
        unaudited = self.ledger.unaudited()
        execution = self.execution
        if unaudited.started:
            self.audit("execution.started", {"workflow_type": execution.workflow_type, "mode": execution.mode,
                                             "provider": execution.provider, "model": execution.model})
        for row in unaudited.tool_calls:
            self.audit_tool_call(**row)
        ended = self.ledger.nodes_interrupted(error=error)
        for node in ended.nodes:
            self._emit_node_finished(**node)
        for name, value in ended.added.items():
            self._added[name] += value  # the execution's counters move with the ending's UPDATE

    def recorded_so_far(self) -> tuple[Usage, int, str]:
        """What the run's ledger holds (RunLedger.so_far): its usage, LLM calls and last text, which its ending
        books."""
        so_far = self.ledger.so_far()
        self.calls = so_far.calls
        if so_far.calls:
            self.last_call = so_far.calls[-1]
        self.tool_calls = so_far.tool_calls
        self._tool_costs = dict(so_far.tool_costs)
        return so_far.usage, len(so_far.calls), so_far.text
