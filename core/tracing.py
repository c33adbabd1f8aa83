"""OpenTelemetry traces, on only when the operator asks: the gate every caller goes through.

Tracing is configured by OpenTelemetry's standard environment variables, read by the SDK itself
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_BSP_*...). It is on when OTEL_TRACES_EXPORTER names an exporter that can export: `otlp`
(the default) once an OTLP endpoint is set, `console` (standard output) always; off with OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none. Off, this module imports nothing of OpenTelemetry and each function here returns at its
first line: the hot path pays one boolean test. On, the SDK's work lives in core.otel (the provider, the request
span, context carriers, outbound headers) and workflows.run_spans (a run's spans, fed by its recorder).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACES_EXPORTERS = ("otlp", "console")  # what OTEL_TRACES_EXPORTER may list (or be `none`, alone)
COMMAND_FLUSH_S = 2  # a command's exit waits this long at most for its last spans to be exported


def traces_exporters(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The span exporters the environment asks for, each once, in its order (settings.CHATTER_TRACES_EXPORTERS, read
    once at start-up; tracing is on when there is one): OTEL_TRACES_EXPORTER's comma-separated list, `otlp` when
    unset; `otlp` only once an OTLP endpoint is set. None with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
    A name not known (or `none` listed with others) stops start-up."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()] or ["otlp"]
    if names != ["none"] and not all(name in TRACES_EXPORTERS for name in names):
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER must be otlp, console, a comma-separated list of them, or "
                                   f"none, got {raw!r}")
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or names == ["none"]:
        return ()
    endpoint = any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)
    return tuple(dict.fromkeys(name for name in names if name != "otlp" or endpoint))


def command_tracing_end() -> None:
    """At a command's end (manage.py, whatever it ran or raised): its last spans exported, waited for at most
    COMMAND_FLUSH_S, and a line on standard error when spans were dropped. The server's processes keep the SDK's
    own shutdown at their exit."""
    from django.apps import apps

    if not apps.ready or not settings.CHATTER_TRACING:
        return
    from core.otel import tracing_end

    if lost := tracing_end(wait_s=COMMAND_FLUSH_S):
        sys.stderr.write(lost + "\n")


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
