"""OpenTelemetry traces, on only when the operator asks: the gate every caller goes through.

Tracing is configured by OpenTelemetry's standard environment variables, read by the SDK itself
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_BSP_*...). It is on when an OTLP endpoint is set, unless OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none. Off, this module imports nothing of OpenTelemetry and each function here returns at its
first line: the hot path pays one boolean test. On, the SDK's work lives in core.otel (the provider, the request
span, context carriers, outbound headers) and workflows.run_spans (a run's spans, fed by its recorder).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from django.conf import settings

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def tracing_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (settings.CHATTER_TRACING is this, read once at start-up)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracing_on() -> bool:
    return settings.CHATTER_TRACING


def run_trace_context(*, execution_id, schedule=None) -> tuple[str, dict]:
    """A new run's trace id and the context its spans will be children of (W3C traceparent, tracestate), stored
    with it so that whoever runs it (this process, a worker, after a crash) continues the trace: the current span
    (the request's, whose caller's traceparent it continued), or a span of its own when there is none (a
    schedule's tick). ("", {}) when tracing is off."""
    if not settings.CHATTER_TRACING:
        return "", {}
    from core.otel import context_for_run

    return context_for_run(execution_id=execution_id, schedule=schedule)


def current_trace_context() -> dict:
    """The current trace context as W3C headers ({"traceparent": ..., "tracestate": ...}), for work sent later (a
    webhook's delivery); {} when tracing is off or nothing is being traced."""
    if not settings.CHATTER_TRACING:
        return {}
    from core.otel import current_carrier

    return current_carrier()


def outbound_hooks() -> dict:
    """httpx `event_hooks` that put the current trace context (traceparent, tracestate) on every request a client
    sends (providers, webhooks); empty when tracing is off."""
    if not settings.CHATTER_TRACING:
        return {}
    from core.otel import inject_headers

    return {"request": [inject_headers]}


def outbound_hooks_async() -> dict:
    """outbound_hooks for an httpx.AsyncClient (MCP servers)."""
    if not settings.CHATTER_TRACING:
        return {}
    from core.otel import inject_headers_async

    return {"request": [inject_headers_async]}
