"""The OpenTelemetry SDK's side of tracing (imported only when core.tracing says tracing is on).

- `tracing_setup`: the process's TracerProvider: each exporter OTEL_TRACES_EXPORTER lists (core.tracing), the OTLP
  one as the environment configures it (its endpoint, headers, timeout, compression), the console one printing to
  standard output, each behind a BatchSpanProcessor: spans wait in a bounded queue (OTEL_BSP_MAX_QUEUE_SIZE) and are
  sent from its own thread, so a slow or unreachable collector never holds a request up; spans that do not fit are
  dropped, and spans the collector did not take are counted (chatter_trace_spans_dropped_total on /metrics).
- `tracing_middleware`: the HTTP request's span (SERVER), a child of the caller's `traceparent`; sync and async.
- `tracing_end`: a command's end (manage.py): the provider shut down, its last spans sent, waited for a short while
  only, and what was dropped said.
- carriers: a run's context stored with it (core.tracing.run_trace_context) and read back by its spans
  (workflows.run_spans); `inject_headers`: the current context on an outbound request.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Sequence

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.utils.decorators import sync_and_async_middleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter

logger = logging.getLogger(__name__)
TRACER_NAME = "chatter"
# On /metrics (chatter_project.metrics registers it in its registry when tracing is on).
SPANS_DROPPED = Counter("chatter_trace_spans_dropped", "Spans the OTLP collector did not take (unreachable, refused)",
                        registry=None)


class CountedExporter(SpanExporter):
    """The configured exporter, counting the spans of batches it could not deliver (after its own retries)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:  # noqa: BLE001 - an exporter's failure is a lost batch, never the caller's problem
            logger.warning("tracing: a batch of %d spans could not be exported", len(spans), exc_info=True)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            SPANS_DROPPED.inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _exporter() -> SpanExporter:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise ImproperlyConfigured("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                                       "installed (or use http/protobuf)") from None
        return GrpcExporter()
    raise ImproperlyConfigured(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: Chatter exports http/protobuf or grpc")


def tracing_setup(exporters: Sequence[str]) -> None:
    """Install the process's TracerProvider (once, at start-up: chatter_project's AppConfig.ready) with `exporters`
    (settings.CHATTER_TRACES_EXPORTERS: otlp, console). The sampler (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG)
    and the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) come from the environment; the service is
    `chatter` unless it names another."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # set already (a second ready() in one process)
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "chatter"}))
    for name in exporters:
        exporter = CountedExporter(_exporter()) if name == "otlp" else ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracer.cache_clear()


def tracing_end(*, wait_s: float) -> str:
    """Shut the process's tracer provider down, its queued spans exported, waiting for that `wait_s` seconds at
    most: the SDK's shutdown (which it also runs at exit) waits up to 30 s for its exporter, which retries a
    collector that is down or silent for its OTEL_EXPORTER_OTLP_TIMEOUT (10 s), all after a command's work is done.
    Past `wait_s` the spans not yet sent are dropped (the export thread is a daemon: it does not hold the exit up).
    Returns what was lost, "" when nothing was."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return ""
    ending = threading.Thread(target=provider.shutdown, name="chatter-tracing-end", daemon=True)
    ending.start()
    ending.join(wait_s)
    dropped = int(spans_dropped())
    refused = f" ({dropped} spans it did not take before were dropped too)" if dropped else ""
    if ending.is_alive():
        return (f"tracing: the OTLP collector did not take this command's last spans within {wait_s:g} s: they "
                f"were dropped{refused}")
    return f"tracing: {dropped} spans were dropped (the OTLP collector did not take them)" if dropped else ""


def spans_dropped() -> float:
    """The spans this process's exporter could not deliver so far (chatter_trace_spans_dropped_total)."""
    return sum(sample.value for family in SPANS_DROPPED.collect() for sample in family.samples
               if sample.name.endswith("_total"))


@functools.cache
def tracer() -> trace.Tracer:
    """Chatter's tracer, made once (getting one from the provider for each span was a fifth of a span's cost)."""
    return trace.get_tracer(TRACER_NAME)


@sync_and_async_middleware
def tracing_middleware(get_response):
    """The request's span, `METHOD route`, a child of the caller's traceparent: what a run the request starts
    records as its parent (core.tracing.run_trace_context). Listed first in MIDDLEWARE only when tracing is on. Sync
    and async (Django's middleware async support): it takes the mode of the handler below it, so it adds no thread
    hop of its own to either."""
    if iscoroutinefunction(get_response):
        async def middleware(request):
            with _request_span(request) as span:
                response = await get_response(request)
                _answered(span, request, response)
                return response
    else:
        def middleware(request):
            with _request_span(request) as span:
                response = get_response(request)
                _answered(span, request, response)
                return response
    return middleware


def _request_span(request):
    return tracer().start_as_current_span(
        request.method, context=propagate.extract(request.headers), kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "url.path": request.path})


def _answered(span: trace.Span, request, response) -> None:
    match = request.resolver_match
    if match is not None and match.route:
        span.update_name(f"{request.method} /{match.route}")
        span.set_attribute("http.route", "/" + match.route)
    span.set_attribute("http.response.status_code", response.status_code)
    if response.status_code >= 500:
        span.set_status(Status(StatusCode.ERROR))


def context_for_run(*, execution_id, schedule=None) -> tuple[str, dict]:
    """(trace id, carrier) of a new run: see core.tracing.run_trace_context."""
    carrier: dict = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    else:  # nothing to continue (a schedule's tick, a command): the run's trace begins with its creation
        attributes = {"chatter.execution.id": str(execution_id),
                      **({"chatter.schedule.id": str(schedule.pk)} if schedule is not None else {})}
        with tracer().start_as_current_span("schedule_run" if schedule is not None else "create_run",
                                            attributes=attributes):
            propagate.inject(carrier)
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return (trace.format_trace_id(span_context.trace_id) if span_context.is_valid else ""), carrier


def current_carrier() -> dict:
    carrier: dict = {}
    propagate.inject(carrier)
    return carrier


def context_of(carrier: dict | None) -> otel_context.Context:
    """The context a stored carrier names (an empty one: a root)."""
    return propagate.extract(carrier or {})


def inject_headers(request) -> None:
    propagate.inject(request.headers)


async def inject_headers_async(request) -> None:
    propagate.inject(request.headers)
