"""HTTP through Django's own ASGI handler (`get_asgi_application()`), on request threads that outlive their request
(core.serving.RequestThreads); no product class subclasses Django's handlers (issue 48, item 1).

A request's signals, middleware and view run on one thread, which the next request finds again (with its database
connection); concurrent requests never share one. A stream stops when its client goes away; one that fails is
closed and its thread not kept."""
import ast
import asyncio
import json
import logging
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished, request_started
from django.db import connections
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from core.serving import RequestThreads

stream_log: list[str] = []
stream_threads: list[threading.Thread] = []


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
    stream_threads.append(threading.current_thread())
    return StreamingHttpResponse(_parts(int(request.GET["count"]), "wait" in request.GET, "fail" in request.GET),
                                 content_type="text/plain")


urlpatterns = [path("whoami/", whoami), path("stream/", stream)]


def scope_for(url: str, method: str = "GET") -> dict:
    path_, _, query = url.partition("?")
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path_, "raw_path": path_.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


class Client:
    """One ASGI connection: the request's body in `chunks`, what the server sent in `sent`; `leave` is set when
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


def served(idle: int = 16) -> RequestThreads:
    return RequestThreads(get_asgi_application(), idle=idle)


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
def test_item_01_requests_one_after_another_run_on_one_thread_that_outlives_them(recorded):
    app = served()

    async def three():
        clients = []
        for n in range(3):
            client = Client([b"hello ", f"{n}".encode()])
            await app(scope_for("/whoami/", "POST"), client.receive, client.send)
            clients.append(client)
        return clients

    clients = asyncio.run(three())
    answers = [json.loads(client.body) for client in clients]
    assert [client.status for client in clients] == [200, 200, 200]
    assert [answer["body"] for answer in answers] == ["hello 0", "hello 1", "hello 2"]
    threads = {answer["thread"] for answer in answers} | {thread for _, thread in recorded}
    assert len(threads) == 1 and threads != {threading.get_ident()}
    assert [signal for signal, _ in recorded] == ["started", "finished"] * 3
    assert app.kept == 1


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_item_01_concurrent_requests_each_have_a_thread_and_only_idle_ones_are_kept():
    app = served(idle=2)
    held, release = [], threading.Event()

    def hold(**kwargs):  # each request waits on its thread until all four hold one
        held.append(threading.get_ident())
        release.wait(10)

    async def scenario():
        clients = [Client() for _ in range(4)]
        running = [asyncio.create_task(app(scope_for("/whoami/"), c.receive, c.send)) for c in clients]
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
    assert app.kept == 2  # the two beyond `idle` were closed


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_item_01_a_stream_is_sent_as_it_comes_and_stops_when_its_client_goes_away(recorded):
    app = served()
    stream_log.clear()

    async def scenario():
        client = Client()
        serving = asyncio.create_task(app(scope_for("/stream/?count=1&wait=1"), client.receive, client.send))
        deadline = asyncio.get_running_loop().time() + 10
        while len(client.sent) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert stream_log == []  # still streaming, waiting for more
        client.leave.set()
        await asyncio.wait_for(serving, 5)
        return client

    client = asyncio.run(scenario())
    assert client.body == b"part 0\n"
    assert stream_log == ["stream closed"]
    assert [signal for signal, _ in recorded] == ["started", "finished"]
    assert app.kept == 1


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_item_01_a_stream_that_fails_is_closed_its_error_raised_and_its_thread_not_kept(recorded):
    """Django's handler raises a failed stream's error without closing the response (no request_finished): the
    request's thread may still hold a connection borrowed from the pool, so it is closed, not kept."""
    app = served()
    stream_log.clear()
    stream_threads.clear()
    client = Client()
    with pytest.raises(RuntimeError, match="the feed broke"):
        asyncio.run(app(scope_for("/stream/?count=1&fail=1"), client.receive, client.send))
    assert client.body == b"part 0\n" and stream_log == ["stream closed"]
    assert app.kept == 0
    stream_threads[0].join(10)
    assert not stream_threads[0].is_alive()  # its connections closed, the thread ended


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_item_01_a_client_that_leaves_before_its_body_is_whole_is_not_served(recorded):
    app = served()
    client = Client([b"part of it"])
    client.messages[0]["more_body"] = True
    client.leave.set()
    asyncio.run(app(scope_for("/whoami/", "POST"), client.receive, client.send))
    assert client.sent == [] and recorded == []


@pytest.mark.django_db(transaction=True)
def test_item_01_the_asgi_application_is_djangos_handler_with_the_middleware_in_one_synchronous_block(settings):
    """Django names every place it adapts the stack between sync and async in the `django.request` logger's debug
    messages (with DEBUG on): only the innermost step, so the middleware run on the request's thread in one go. A
    request to the API without a key goes through the project's whole stack to DRF's 401."""
    from chatter_project.asgi import application, django_asgi_app

    assert type(django_asgi_app) is ASGIHandler
    settings.DEBUG = True
    logger, records = logging.getLogger("django.request"), []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        ASGIHandler()  # what get_asgi_application() returns, without django.setup(), which resets the loggers
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len([r for r in records if "adapted" in r.getMessage()]) == 1

    client = Client()
    asyncio.run(application(scope_for("/api/v1/conversations/"), client.receive, client.send))
    connections.close_all()
    assert client.status == 401 and json.loads(client.body)["error"]["code"] == "not_authenticated"
    assert dict(client.sent[0]["headers"])[b"X-Request-ID"]  # the correlation middleware ran


HANDLERS = {"BaseHandler", "ASGIHandler", "WSGIHandler", "ClientHandler", "AsyncClientHandler"}


def _product_modules():
    root = Path(settings.BASE_DIR)
    for package in sorted(p.parent for p in root.glob("*/__init__.py")):
        if package.name not in {"tests", "bench", "examples", "scripts"}:
            yield from package.rglob("*.py")


def test_item_01_no_product_class_subclasses_djangos_handlers():
    modules = list(_product_modules())
    assert any(m.name == "asgi.py" for m in modules)  # the walk reaches chatter_project
    subclasses = []
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.ClassDef):
                bases = {base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                         for base in node.bases}
                if bases & HANDLERS:
                    subclasses.append(f"{module.relative_to(settings.BASE_DIR)}: {node.name}")
    assert subclasses == []
    assert not Path(settings.BASE_DIR, "core", "http_handler.py").exists()
