"""The request's span (core.otel.tracing_middleware) through Django's own ASGI handler, on a sync view and on an async
one: a middleware of both modes, it takes the mode of the stack below it, so turning tracing on adds no thread hop
to either (an async view stays on the event loop), and each request has its SERVER span, current in its view
(docs/operations/tracing.md). The spans go to an in-memory exporter of this test's own tracer provider: this
process's global one stays unset (test_tracing's off test)."""
import asyncio
import json
from collections import Counter

import pytest
from asgiref import sync as asgiref_sync
from django.core.asgi import get_asgi_application
from django.http import JsonResponse
from django.urls import path
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.test_serving import Client, scope_for

TRACING = "core.otel.tracing_middleware"
# Chatter's own middleware of both modes (the served stack's WhiteNoise is sync only, so the whole chain is sync
# there: the tracing middleware then runs sync, on the request's thread, as every other does).
BOTH_MODES = ["core.correlation.correlation_id_middleware", "core.request_text.nul_refusal_middleware"]


def answer(request) -> JsonResponse:
    span = trace.get_current_span().get_span_context()
    return JsonResponse({"span": trace.format_span_id(span.span_id) if span.is_valid else ""})


def sync_view(request, n):
    return answer(request)


async def async_view(request, n):
    await asyncio.sleep(0)
    return answer(request)


urlpatterns = [path("sync/<int:n>/", sync_view), path("async/<int:n>/", async_view)]


@pytest.fixture
def exported(monkeypatch):
    """The spans the tracing middleware makes, through a tracer of a provider of this test's own."""
    import core.otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(core.otel, "tracer", lambda: provider.get_tracer("chatter"))
    yield exporter
    provider.shutdown()


@pytest.fixture
def hops(monkeypatch):
    """asgiref's hops, from the loop to a thread and back, counted (this test's own instrument)."""
    counted: Counter = Counter()
    to_thread, to_loop = asgiref_sync.SyncToAsync.__call__, asgiref_sync.AsyncToSync.__call__

    async def counted_to_thread(self, *args, **kwargs):
        counted["to a thread"] += 1
        return await to_thread(self, *args, **kwargs)

    def counted_to_loop(self, *args, **kwargs):
        counted["to the loop"] += 1
        return to_loop(self, *args, **kwargs)

    monkeypatch.setattr(asgiref_sync.SyncToAsync, "__call__", counted_to_thread)
    monkeypatch.setattr(asgiref_sync.AsyncToSync, "__call__", counted_to_loop)
    return counted


def served(settings, hops, middleware: list[str], url: str) -> tuple[dict, Counter]:
    """GET `url` through Django's ASGI handler with `middleware`: its JSON answer and the hops it took."""
    settings.MIDDLEWARE = middleware
    app = get_asgi_application()
    client = Client()
    hops.clear()
    asyncio.run(app(scope_for(url), client.receive, client.send))
    taken = Counter(hops)
    assert client.status == 200, client.body
    return json.loads(client.body), taken


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("view", ["sync", "async"])
def test_item_tracing_a_sync_and_an_async_view_have_their_span_and_no_thread_hop_more(settings, exported, hops,
                                                                                      view):
    untraced, hops_untraced = served(settings, hops, BOTH_MODES, f"/{view}/1/")
    assert untraced == {"span": ""} and not exported.get_finished_spans()  # off: no span, as before

    traced, hops_traced = served(settings, hops, [TRACING, *BOTH_MODES], f"/{view}/2/")

    assert hops_traced == hops_untraced  # the same hops as without tracing (an async view: none)
    if view == "async":
        assert hops_traced["to the loop"] == 0  # its middleware and view on the loop, no thread to hop back from
    (span,) = exported.get_finished_spans()
    assert span.kind == SpanKind.SERVER and span.name == f"GET /{view}/<int:n>/"
    assert dict(span.attributes) == {"http.request.method": "GET", "url.path": f"/{view}/2/",
                                     "http.route": f"/{view}/<int:n>/", "http.response.status_code": 200}
    assert traced["span"] == trace.format_span_id(span.context.span_id)  # current in the view


@pytest.mark.urls(__name__)
def test_item_tracing_the_served_stack_is_sync_below_tracing_and_tracing_adds_no_hop(settings, exported, hops):
    """The stack a server runs (WhiteNoise's middleware is sync only): the request's span on a sync view and an
    async one, with the hops it has without tracing."""
    from django.conf import settings as served_settings

    stack = [name for name in served_settings.MIDDLEWARE if name != TRACING]
    for view in ("sync", "async"):
        _, untraced = served(settings, hops, stack, f"/{view}/1/")
        traced, with_tracing = served(settings, hops, [TRACING, *stack], f"/{view}/2/")
        assert with_tracing == untraced, view
        assert traced["span"] == trace.format_span_id(exported.get_finished_spans()[-1].context.span_id)
