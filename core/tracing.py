"""OpenTelemetry traces, on only when the operator asks: the gate every caller goes through.

Tracing is configured by OpenTelemetry's standard environment variables, read by the SDK itself
(OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_TRACES_SAMPLER, OTEL_BSP_*...), their values checked at start-up (otel_settings_check). It is on when
OTEL_TRACES_EXPORTER names an exporter that can export: `otlp` (the default) once an OTLP endpoint is set, `console`
(standard output) always; off with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. Off, this module imports
nothing of OpenTelemetry and each function here returns at its first line: the hot path pays one boolean test. On,
the SDK's work lives in core.otel (the provider, the request span, context carriers, outbound headers) and
workflows.run_spans (a run's spans, fed by its recorder).
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
TRACES_EXPORTERS = ("otlp", "console")  # what OTEL_TRACES_EXPORTER may list (or be `none`, alone)
COMMAND_FLUSH_S = 2  # a command's exit waits this long at most for its last spans to be exported


# The SDK's own values of the variables Chatter documents (docs/operations/tracing.md), checked at start-up.
SAMPLERS = ("parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio", "always_on", "always_off",
            "traceidratio")
RATIO_SAMPLERS = ("parentbased_traceidratio", "traceidratio")  # the ones OTEL_TRACES_SAMPLER_ARG is read by
PROTOCOLS = ("http/protobuf", "grpc")
COMPRESSIONS = ("none", "gzip", "deflate")
BATCHING = {"OTEL_BSP_SCHEDULE_DELAY": ("milliseconds", 5000), "OTEL_BSP_MAX_QUEUE_SIZE": ("spans", 2048),
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("spans", 512)}  # their unit and the SDK's default
OTLP_PREFIXES = ("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_")  # all signals', traces' own (which wins)


def otel_settings_check(environ: Mapping[str, str] = os.environ) -> None:
    """Stop start-up on a bad value of an OpenTelemetry variable Chatter documents, naming the variable and what it
    may be, as the SDK would otherwise stop every process with a bare ValueError (OTEL_BSP_MAX_QUEUE_SIZE=0), or
    pass the value over for its default (OTEL_BSP_MAX_QUEUE_SIZE=abc, OTEL_TRACES_SAMPLER=bogus). Checked whether
    tracing is on or not, as every setting is. Empty is unset, as the SDK reads it. Header and endpoint values are
    never repeated (they may hold a key)."""
    def value(name: str) -> str:
        return environ.get(name, "").strip()

    def refuse(name: str, allowed: str, shown: str | None = None) -> None:
        got = f", got {value(name)!r}" if shown is None else f": {shown}"
        raise ImproperlyConfigured(f"{name} must be {allowed}{got}")

    if value("OTEL_SDK_DISABLED") and value("OTEL_SDK_DISABLED").lower() not in ("true", "false"):
        refuse("OTEL_SDK_DISABLED", "true or false")
    batching = {name: default for name, (_, default) in BATCHING.items()}
    for name, (unit, _) in BATCHING.items():
        if raw := value(name):
            if not raw.isdigit() or int(raw) < 1:
                refuse(name, f"a whole number of {unit}, at least 1")
            batching[name] = int(raw)
    if batching["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] > batching["OTEL_BSP_MAX_QUEUE_SIZE"]:
        raise ImproperlyConfigured(
            f"OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({batching['OTEL_BSP_MAX_EXPORT_BATCH_SIZE']}) must be at most "
            f"OTEL_BSP_MAX_QUEUE_SIZE ({batching['OTEL_BSP_MAX_QUEUE_SIZE']}): a batch is taken from the queue")
    sampler = value("OTEL_TRACES_SAMPLER").lower()
    if sampler and sampler not in SAMPLERS:
        refuse("OTEL_TRACES_SAMPLER", "one of " + ", ".join(SAMPLERS))
    if sampler in RATIO_SAMPLERS and value("OTEL_TRACES_SAMPLER_ARG") \
            and not 0 <= _number(value("OTEL_TRACES_SAMPLER_ARG")) <= 1:
        refuse("OTEL_TRACES_SAMPLER_ARG", f"a number from 0 to 1 (the share of traces {sampler} keeps)")
    for name in ("OTEL_RESOURCE_ATTRIBUTES", *(prefix + "HEADERS" for prefix in OTLP_PREFIXES)):
        if not all("=" in item and item.split("=", 1)[0].strip() for item in value(name).split(",") if item.strip()):
            refuse(name, "comma-separated key=value pairs", shown="one has no key=")
    for prefix in OTLP_PREFIXES:
        if value(prefix + "TIMEOUT") and not 0 < _number(value(prefix + "TIMEOUT")) < math.inf:
            refuse(prefix + "TIMEOUT", "a number of seconds greater than 0 (an export's every try, together)")
        if value(prefix + "COMPRESSION") and value(prefix + "COMPRESSION").lower() not in COMPRESSIONS:
            refuse(prefix + "COMPRESSION", "one of " + ", ".join(COMPRESSIONS))
        if value(prefix + "PROTOCOL") and value(prefix + "PROTOCOL").lower() not in PROTOCOLS:
            refuse(prefix + "PROTOCOL", "one of " + ", ".join(PROTOCOLS))
        if value(prefix + "ENDPOINT") and not _http_url(value(prefix + "ENDPOINT")):
            refuse(prefix + "ENDPOINT", "an http:// or https:// URL, such as http://collector:4318",
                   shown="it has no such scheme, no host or a bad port")


def _http_url(text: str) -> bool:
    try:
        url = urlsplit(text)
        return url.scheme.lower() in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:  # (a port not a number, or past 65535; an unclosed [)
        return False


def _number(text: str) -> float:
    """A decimal number as the SDK reads one (float()); NaN for what is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def traces_exporters(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The span exporters the environment asks for, each once, in its order (settings.CHATTER_TRACES_EXPORTERS, read
    once at start-up; tracing is on when there is one): OTEL_TRACES_EXPORTER's comma-separated list, `otlp` when
    unset; `otlp` only once an OTLP endpoint is set. None with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
    A name not known (or `none` listed with others) stops start-up, as does a bad value of another of the variables
    Chatter documents (otel_settings_check)."""
    otel_settings_check(environ)
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
