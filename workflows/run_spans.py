"""A run's OpenTelemetry spans (made only when tracing is on: core.tracing), fed by its ExecutionRecorder's hooks, the
one place every run's moments pass (JSON workflows through the engine, registered Python graphs through LangGraph's
callbacks and stream): `invoke_agent` for the run (a child of the context stored with it, so a run a worker
executes later keeps its trace), `node`, `chat` / `embeddings` per LLM call with OpenTelemetry's GenAI attributes
(a routed call: one per try, a failed one with error.type), `execute_tool`, `retrieval`. Which attributes, and
the opt-in for message content: docs/operations/tracing.md#what-a-trace-holds.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from core.otel import context_of, tracer

CAPTURE_CONTENT = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in (
    "true", "1", "span_only", "span_and_event")
MAX_CONTENT_CHARS = 4000


def _cost(value) -> float:
    return float(value or 0)


def _content(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_CONTENT_CHARS]


def _ended_ns(duration_ms: int) -> tuple[int, int]:
    end = time.time_ns()
    return end - max(duration_ms, 0) * 1_000_000, end


@dataclass
class _Call:
    """An LLM call in flight: its span, the try under way's (a routed call tries deployments in turn, each try a span
    of its own); for a routed call, which of its try's ends (its row, its try's outcome: either may come first) came."""
    span: trace.Span
    started: object  # the CallStarted it was announced with
    row: object = None  # its LLMCall, recorded before its try's outcome
    tried: object = None  # its try's Attempt, answered before its row was recorded
    failed: tuple | None = None  # (Attempt, when) a try that failed with no row yet: one may follow (a reply cut short)


class RunSpans:
    """The spans of one run in this process (a resumed run gets a new run span, in the same trace). Its recorder
    calls it under its lock; nodes are known by their index, calls in flight by their node's."""

    def __init__(self, execution, *, graph_name: str | None = None, resumed: bool = False) -> None:
        """`graph_name`: a registered Python graph's, which names the agent when no template does."""
        agent = execution.template.key if execution.template_id else (graph_name or execution.workflow_type)
        attributes = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
            "gen_ai.request.model": execution.model, "gen_ai.provider.name": execution.provider,
            "chatter.execution.id": str(execution.pk), "chatter.workflow_type": execution.workflow_type,
            "chatter.mode": execution.mode, "chatter.resumed": resumed,
        }
        if execution.template_id:
            attributes["chatter.template"] = execution.template.key
        if execution.definition_id:
            attributes["chatter.definition.id"] = str(execution.definition_id)
        if execution.conversation_id:
            attributes["gen_ai.conversation.id"] = attributes["chatter.thread.id"] = str(execution.conversation_id)
        self.run = tracer().start_span(f"invoke_agent {agent}", context=context_of(execution.trace_context),
                                       kind=SpanKind.INTERNAL, attributes=attributes)
        self.context = trace.set_span_in_context(self.run)
        self.nodes: dict[int, trace.Span] = {}
        self.calls: dict[int | None, list[_Call]] = {}

    @contextmanager
    def current(self) -> Iterator[None]:
        """The run's span is the current one in here: what the run calls out (providers, MCP servers) carries it
        as its traceparent (core.tracing.outbound_hooks); LangGraph's threads inherit it."""
        with trace.use_span(self.run, end_on_exit=False):
            yield

    def outbound_headers(self) -> dict[str, str]:
        """The run's span as a request's traceparent (and tracestate), for a call made where it is not the current
        span (the gateway's pass-through, on the event loop)."""
        from opentelemetry import propagate

        headers: dict[str, str] = {}
        propagate.inject(headers, context=trace.set_span_in_context(self.run))
        return headers

    def _parent(self, index: int | None):
        span = self.nodes.get(index) if index is not None else None
        return trace.set_span_in_context(span) if span is not None else self.context

    # --- nodes ---------------------------------------------------------------------------------------------
    def node_started(self, index: int, node) -> None:
        self.nodes[index] = tracer().start_span(f"node {node.id}", context=self.context, attributes={
            "chatter.node.id": node.id, "chatter.node.type": node.type, "chatter.node.index": index})

    def node_ended(self, index: int, *, status: str, error: str, usage: dict, error_type: str = "") -> None:
        """`error_type`: a failed node's classification (its run's error_type when the failure ends the run)."""
        for call in self.calls.pop(index, ()):  # a call that never answered ends with its node, failed as it did
            if call.failed is not None:  # its last try failed (every deployment did): its span ends as it failed
                call.span.end(end_time=call.failed[1])
                continue
            if call.row is None:
                call.span.set_status(Status(StatusCode.ERROR, error or "the call ended without an answer"))
                call.span.set_attribute("error.type", error_type or "no_answer")
            call.span.end()
        span = self.nodes.pop(index, None)
        if span is None:
            return
        span.set_attributes({"chatter.status": status, "chatter.total_tokens": usage.get("total_tokens", 0),
                             "chatter.cost": _cost(usage.get("cost"))})
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR, error[:500]))
        span.end()

    # --- LLM calls -----------------------------------------------------------------------------------------
    def call_started(self, index: int | None, call) -> None:
        self.calls.setdefault(index, []).append(_Call(self._call_span(index, call), call))

    def _call_span(self, index: int | None, call, start_time: int | None = None) -> trace.Span:
        attributes = {"gen_ai.operation.name": call.operation, "gen_ai.provider.name": call.provider,
                      "gen_ai.request.model": call.requested_model}
        if call.max_tokens:
            attributes["gen_ai.request.max_tokens"] = call.max_tokens
        if call.temperature is not None:
            attributes["gen_ai.request.temperature"] = float(call.temperature)
        return tracer().start_span(f"{call.operation} {call.requested_model}", context=self._parent(index),
                                   kind=SpanKind.CLIENT, attributes=attributes, start_time=start_time)

    def _next_try(self, index: int | None, call: _Call) -> None:
        """The try that failed with no row ends, as it failed; the next try's span begins then."""
        _, at = call.failed
        call.span.end(end_time=at)
        call.span, call.failed = self._call_span(index, call.started, start_time=at), None

    def attempted(self, index: int | None, attempt) -> None:
        """A try of a routed call on one deployment ended (engine.runtime: before or after the call's row). A try
        that failed is a span of its own, the deployment's, with the error status and its error.type; no usage (only
        a row has any)."""
        waiting = self.calls.get(index)
        if not waiting:
            return
        call = waiting[0]
        if call.failed is not None:  # the try before failed with no row: this is another's
            self._next_try(index, call)
        if call.row is not None:  # its row came first (a reply whole, a reply cut short): the try's span ends now
            waiting.pop(0)
            if not attempt.ok:
                self._failed(call.span, attempt)
            call.span.end()
        elif attempt.ok:  # its row follows
            call.tried = attempt
        else:  # its row may follow (a reply cut short), or the next try, or the call's end
            self._failed(call.span, attempt)
            call.failed = (attempt, time.time_ns())

    @staticmethod
    def _failed(span: trace.Span, attempt) -> None:
        span.set_attributes({"gen_ai.provider.name": attempt.provider, "chatter.deployment": attempt.deployment,
                             "error.type": attempt.error_type or "error"})
        span.set_status(Status(StatusCode.ERROR, attempt.error[:500]))

    def call_ended(self, index: int | None, call) -> None:
        waiting = self.calls.get(index)
        if waiting:
            pending = waiting[0]
            if pending.failed is not None and pending.failed[0].deployment != call.deployment:
                self._next_try(index, pending)  # the failed try had no row: this one answered, on another deployment
            span, started = pending.span, pending.started
            # A routed call's row before its try's outcome (an answer whole): its span ends with that outcome.
            deferred = pending.failed is None and call.deployment and pending.tried is None
            if deferred:
                pending.row = call
            else:
                waiting.pop(0)
        else:  # a call not announced (none is in this process): its span from its duration
            start, _ = _ended_ns(call.duration_ms)
            span, started, deferred = tracer().start_span(
                f"chat {call.requested_model}", context=self._parent(index), kind=SpanKind.CLIENT, start_time=start,
                attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": call.provider,
                            "gen_ai.request.model": call.requested_model}), None, False
        usage = call.usage
        # The provider that answered, as the call's row has it: a routed call's deployment (after a fallback,
        # another provider's), not the one of the model name asked for that the span started with.
        span.set_attributes({
            "gen_ai.provider.name": call.provider, "gen_ai.response.model": call.model,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens, "chatter.cost": _cost(usage.cost),
            "chatter.usage.estimated": usage.estimated,
            **({"gen_ai.response.finish_reasons": [call.finish_reason]} if call.finish_reason else {}),
            **({"gen_ai.response.id": call.message_id} if call.message_id else {}),
            **({"chatter.deployment": call.deployment} if call.deployment else {}),
        })
        if CAPTURE_CONTENT and started is not None and (text := started.streamed_so_far().get("text")):
            span.set_attribute("gen_ai.output.messages", json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": _content(text)}]}]))
        if not deferred:
            span.end()

    # --- tool calls ----------------------------------------------------------------------------------------
    def tool_called(self, index: int | None, *, tool: str, ok: bool, error: str, duration_ms: int,
                    server_id: str | None, arguments, result) -> None:
        start, end = _ended_ns(duration_ms)
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                      "gen_ai.tool.type": "extension" if server_id else "function"}
        if server_id:
            attributes["chatter.mcp_server.id"] = str(server_id)
        if CAPTURE_CONTENT:
            attributes["gen_ai.tool.call.arguments"] = _content(arguments)
            attributes["gen_ai.tool.call.result"] = _content(result)
        span = tracer().start_span(f"execute_tool {tool}", context=self._parent(index), kind=SpanKind.INTERNAL,
                                   start_time=start, attributes=attributes)
        if not ok:
            span.set_status(Status(StatusCode.ERROR, error[:500]))
            span.set_attribute("error.type", "tool_error")
        span.end(end_time=end)

    # --- retrievals ----------------------------------------------------------------------------------------
    def retrieved(self, index: int | None, record: dict) -> None:
        """A search of knowledge collections (engine.retrieval), ended: its query's embedding call is a span of
        its own, beside it (the same parent, within its time)."""
        start, end = _ended_ns(int(record.get("latency_ms") or 0))
        collections = [str(name) for name in record.get("collections") or ()]
        attributes = {"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": ",".join(collections),
                      "chatter.retrieval.mode": str(record.get("mode") or ""),
                      "chatter.retrieval.k": int(record.get("k") or 0),
                      "chatter.retrieval.chunks": len(record.get("chunks") or ())}
        if CAPTURE_CONTENT:
            attributes["gen_ai.retrieval.query.text"] = _content(record.get("query") or "")
        tracer().start_span(f"retrieval {','.join(collections)}", context=self._parent(index), start_time=start,
                            kind=SpanKind.INTERNAL, attributes=attributes).end(end_time=end)

    # --- the run's end -------------------------------------------------------------------------------------
    def ended(self, execution) -> None:
        """The run ended or paused (`waiting`) in this process, `execution` as it was left."""
        failed = execution is not None and execution.status == "failed"
        error, error_type = (execution.error_message or "", execution.error_type) if failed else ("", "")
        for index in [*self.nodes, *(index for index in self.calls if index not in self.nodes)]:
            self.node_ended(index, status="abandoned", error=error, usage={}, error_type=error_type)
        if execution is not None:
            self.run.set_attributes({
                "chatter.status": execution.status, "gen_ai.usage.input_tokens": execution.prompt_tokens,
                "gen_ai.usage.output_tokens": execution.completion_tokens,
                "chatter.total_tokens": execution.total_tokens, "chatter.cost": _cost(execution.cost),
                "chatter.llm_calls": execution.llm_calls, "chatter.tool_calls": execution.tool_calls})
            if execution.status == "failed":
                self.run.set_status(Status(StatusCode.ERROR, (execution.error_message or "")[:500]))
                self.run.set_attribute("error.type", execution.error_type or "error")
        else:
            self.run.set_status(Status(StatusCode.ERROR, "the run's process did not end it"))
        self.run.end()
