"""core/http_handler.py: Django's request handling behind an ASGI front, each request handed to its thread once.

A request's signals, middleware and view run on one request thread in one go; the thread outlives the request,
so the next request finds it (and its database connection) again; concurrent requests never share one. A whole
response is closed (request_finished) before it is sent, a streaming one after, and a stream stops when its client
goes away."""
import asyncio
import json
import logging
import threading

import pytest
from django.core.signals import request_finished, request_started
from django.db import connections
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from core.http_handler import HttpHandler

stream_log: list[str] = []


async def _parts(count: int, then_wait: bool, then_fail: bool = False):
    try:
        for i in range(count):
            yield f"part {i}\n"
        if then_fail:
            raise RuntimeError("the feed broke")
        if then_wait:
            await asyncio.Event().wait()  # a feed with nothing more to say yet
    finally:
        stream_log.append("stream closed")


@csrf_exempt
def whoami(request):
    return JsonResponse({"thread": threading.get_ident(), "body": request.body.decode()})


def stream(request):
    return StreamingHttpResponse(_parts(int(request.GET["count"]), "wait" in request.GET, "fail" in request.GET),
                                 content_type="text/plain")


urlpatterns = [path("whoami/", whoami), path("stream/", stream)]


def scope_for(url: str, method: str = "GET") -> dict:
    path_, _, query = url.partition("?")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path_, "raw_path": path_.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


class Client:
    """One ASGI connection: the request's body in `chunks`, what the handler sent in `sent`; `leave` is set when
    the client goes away (it then hears `http.disconnect`)."""

    def __init__(self, chunks=(b"",)) -> None:
        self.messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                         for i, chunk in enumerate(chunks)]
        self.sent: list[dict] = []
        self.leave = asyncio.Event()

    async def receive(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


@pytest.fixture
def recorded():
    """(signal, thread) for each request_started and request_finished, in order."""
    seen = []

    def started(**kwargs):
        seen.append(("started", threading.get_ident()))

    def finished(**kwargs):
        seen.append(("finished", threading.get_ident()))

    request_started.connect(started)
    request_finished.connect(finished)
    yield seen
    request_started.disconnect(started)
    request_finished.disconnect(finished)


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_requests_one_after_another_run_whole_on_one_thread_that_outlives_them(recorded):
    handler = HttpHandler()

    async def three():
        clients = []
        for n in range(3):
            client = Client([b"hello ", f"{n}".encode()])
            await handler(scope_for("/whoami/", "POST"), client.receive, client.send)
            clients.append(client)
        return clients

    clients = asyncio.run(three())
    answers = [json.loads(client.body) for client in clients]
    assert [client.status for client in clients] == [200, 200, 200]
    assert [answer["body"] for answer in answers] == ["hello 0", "hello 1", "hello 2"]
    threads = {answer["thread"] for answer in answers} | {thread for _, thread in recorded}
    assert len(threads) == 1 and threads != {threading.get_ident()}
    assert [signal for signal, _ in recorded] == ["started", "finished"] * 3
    assert handler.kept == 1


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_each_have_a_thread_and_only_idle_ones_are_kept():
    handler = HttpHandler(idle=2)
    held, release = [], threading.Event()

    def hold(**kwargs):  # each request waits on its thread until all four hold one
        held.append(threading.get_ident())
        release.wait(10)

    async def scenario():
        clients = [Client() for _ in range(4)]
        running = [asyncio.create_task(handler(scope_for("/whoami/"), c.receive, c.send)) for c in clients]
        while len(held) < 4:
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*running)
        return clients

    request_started.connect(hold)
    try:
        clients = asyncio.run(scenario())
    finally:
        request_started.disconnect(hold)
    served_on = [json.loads(client.body)["thread"] for client in clients]
    assert len(set(held)) == 4 and sorted(served_on) == sorted(held)  # one thread each, for the whole request
    assert handler.kept == 2  # the two beyond `idle` were closed


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_a_whole_response_is_finished_before_it_is_sent_and_a_stream_after(recorded):
    handler = HttpHandler()
    order = []

    async def scenario():
        for url in ("/whoami/", "/stream/?count=2"):
            client = Client()

            async def send(message, client=client):
                order.append((url, "sent", len(recorded)))
                await client.send(message)

            await handler(scope_for(url), client.receive, send)
            order.append((url, "done", len(recorded)))
            yield client

    async def both():
        return [client async for client in scenario()]

    whole, streamed = asyncio.run(both())
    assert json.loads(whole.body)["body"] == "" and streamed.body == b"part 0\npart 1\n"
    assert streamed.sent[-1] == {"type": "http.response.body"}  # the stream's end
    # the whole response: finished (2 signals) before its first message; the stream: started only, until it ends
    assert [n for url, what, n in order if url == "/whoami/" and what == "sent"] == [2, 2]
    assert {n for url, what, n in order if url != "/whoami/" and what == "sent"} == {3}
    assert order[-1] == ("/stream/?count=2", "done", 4)


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_a_stream_stops_when_its_client_goes_away(recorded):
    handler = HttpHandler()
    stream_log.clear()

    async def scenario():
        client = Client()
        serving = asyncio.create_task(handler(scope_for("/stream/?count=1&wait=1"), client.receive, client.send))
        while len(client.sent) < 2:
            await asyncio.sleep(0.01)
        assert stream_log == []  # still streaming, waiting for more
        client.leave.set()
        await asyncio.wait_for(serving, 5)
        return client

    client = asyncio.run(scenario())
    assert client.body == b"part 0\n"
    assert stream_log == ["stream closed"]
    assert [signal for signal, _ in recorded] == ["started", "finished"]


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_a_stream_that_fails_is_closed_and_its_error_raised(recorded):
    handler = HttpHandler()
    stream_log.clear()
    client = Client()
    with pytest.raises(RuntimeError, match="the feed broke"):
        asyncio.run(handler(scope_for("/stream/?count=1&fail=1"), client.receive, client.send))
    assert client.body == b"part 0\n" and stream_log == ["stream closed"]
    assert [signal for signal, _ in recorded] == ["started", "finished"]  # closed: its connection given back
    assert handler.kept == 1


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_a_client_that_leaves_before_its_body_is_whole_is_not_served(recorded):
    handler = HttpHandler()
    client = Client([b"part of it"])
    client.messages[0]["more_body"] = True
    client.leave.set()
    asyncio.run(handler(scope_for("/whoami/", "POST"), client.receive, client.send))
    assert client.sent == [] and recorded == [] and handler.kept == 0


def test_only_http_connections_are_handled():
    with pytest.raises(ValueError, match="not websocket"):
        asyncio.run(HttpHandler()({"type": "websocket"}, None, None))


@pytest.mark.django_db(transaction=True)
def test_the_asgi_application_runs_the_middleware_synchronously_in_one_block(settings):
    """Loaded as Django's WSGI handler loads it: Django names every place it adapts the stack between sync and async
    in the `django.request` logger's debug messages (with DEBUG on): here none. A request to the API without a key
    goes through the project's whole stack to DRF's 401."""
    from chatter_project.asgi import application

    settings.DEBUG = True
    logger, records = logging.getLogger("django.request"), []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        HttpHandler()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [r.getMessage() for r in records if "adapted" in r.getMessage()] == []

    client = Client()
    asyncio.run(application(scope_for("/api/v1/conversations/"), client.receive, client.send))
    connections.close_all()
    assert client.status == 401 and json.loads(client.body)["error"]["code"] == "not_authenticated"
    assert dict(client.sent[0]["headers"])[b"X-Request-ID"]  # the correlation middleware ran
