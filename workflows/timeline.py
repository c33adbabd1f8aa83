"""A run's timeline for its admin page: its nodes, LLM calls, tool calls and searches of knowledge collections (its
`retrieval` events: a retrieval node's, a Python graph's retriever) as bars on one time axis, each with its
duration, tokens and cost. Positions are percents of the run's span, drawn by admin/workflows/timeline.html with
HTML and CSS only."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from workflows.models import ExecutionEvent, LLMCall, NodeExecution, ToolCall, WorkflowExecution

MAX_BARS = 300  # a longer run shows its first bars and says how many it left out
MIN_WIDTH = 0.3  # percent of the axis


@dataclass(frozen=True)
class TimelineBar:
    kind: str  # "node", "llm", "tool" or "retrieval"
    label: str
    start: datetime
    end: datetime
    tokens: int | None
    cost: Decimal | None
    failed: bool
    duration_ms: int | None  # as recorded (None: still going)
    left: float = 0.0  # percents of the axis
    width: float = 0.0


@dataclass(frozen=True)
class Timeline:
    start: datetime
    end: datetime
    bars: list[TimelineBar]
    left_out: int

    @property
    def span_ms(self) -> int:
        return round((self.end - self.start) / timedelta(milliseconds=1))

    @property
    def span_us(self) -> int:  # what the bars are placed by, to the microsecond (a quick run spans a few ms)
        return round((self.end - self.start) / timedelta(microseconds=1))


def _ended(start: datetime, completed: datetime | None, duration_ms: int | None, now: datetime) -> datetime:
    if completed is not None:
        return completed
    return start + timedelta(milliseconds=duration_ms) if duration_ms is not None else now


def _retrieval_bar(event: ExecutionEvent) -> TimelineBar:
    """A search, recorded as it ended, with its latency (its query's embedding call is a bar of its own)."""
    data = event.data
    latency_ms = int(data.get("latency_ms") or 0)
    query = str(data.get("query") or "")
    label = (f"{data.get('node_id')}: \"{query[:60]}{'…' if len(query) > 60 else ''}\" in "
             f"{', '.join(map(str, data.get('collections') or []))}, {len(data.get('chunks') or [])} chunks")
    return TimelineBar("retrieval", label, event.created_at - timedelta(milliseconds=latency_ms), event.created_at,
                       None, None, False, latency_ms)


def run_timeline(execution: WorkflowExecution, *, now: datetime | None = None) -> Timeline:
    """The bars of a run, earliest first. An LLM or tool call is recorded when it ends, with its duration: it
    started that long before."""
    now = now or timezone.now()
    nodes = NodeExecution.objects.filter(execution=execution).order_by("index")
    calls = LLMCall.objects.filter(execution=execution).order_by("id")
    tools = ToolCall.objects.filter(execution=execution).order_by("id")
    searches = ExecutionEvent.objects.filter(execution=execution, event="retrieval").order_by("seq")
    bars = []
    for node in nodes[:MAX_BARS]:
        bars.append(TimelineBar("node", f"{node.node_id} ({node.node_type})", node.started_at,
                                _ended(node.started_at, node.completed_at, node.duration_ms, now),
                                node.total_tokens, node.cost, node.status == NodeExecution.Status.FAILED,
                                node.duration_ms))
    for call in calls[:MAX_BARS]:
        bars.append(TimelineBar("llm", f"{call.provider}/{call.model}",
                                call.created_at - timedelta(milliseconds=call.duration_ms), call.created_at,
                                call.total_tokens, call.cost, False, call.duration_ms))
    for call in tools[:MAX_BARS]:
        bars.append(TimelineBar("tool", call.tool, call.created_at - timedelta(milliseconds=call.duration_ms),
                                call.created_at, None, None, not call.ok, call.duration_ms))
    for event in searches[:MAX_BARS]:
        bars.append(_retrieval_bar(event))
    bars.sort(key=lambda bar: (bar.start, bar.kind != "node"))
    # each kind's first MAX_BARS were read: a kind with more counts the rest too
    total = len(bars) if len(bars) < MAX_BARS else sum(rows.count() for rows in (nodes, calls, tools, searches))
    bars = bars[:MAX_BARS]
    start = min([execution.started_at or execution.created_at, *(bar.start for bar in bars)])
    end = max([execution.completed_at or now, *(bar.end for bar in bars)])  # a run still going: until now
    span = max((end - start).total_seconds(), 0.001)
    placed = []
    for bar in bars:
        width = max((bar.end - bar.start).total_seconds() / span * 100, MIN_WIDTH)  # an instant stays visible
        left = min((bar.start - start).total_seconds() / span * 100, 100 - width)
        placed.append(TimelineBar(**{**bar.__dict__, "left": left, "width": width}))
    return Timeline(start=start, end=end, bars=placed, left_out=total - len(placed))
