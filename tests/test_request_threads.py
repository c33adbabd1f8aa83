"""core/request_threads.py: a request's thread-sensitive work runs on a thread that outlives it, so the
next request finds the thread (and its database connection) again; concurrent requests never share one."""
import asyncio
import logging
import threading

import pytest
from asgiref.sync import sync_to_async

from core.request_threads import RequestThreads


class Recording:
    """An ASGI app whose request does its work on its thread-sensitive thread, as Django's handler does."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.threads: list[int] = []
        self.hold = hold

    async def __call__(self, scope, receive, send) -> None:
        self.threads.append(await sync_to_async(threading.get_ident)())
        if self.hold is not None:
            await self.hold.wait()
        self.threads.append(await sync_to_async(threading.get_ident)())  # the same thread within one request


def request(app):
    return app({"type": "http"}, None, None)


def test_requests_one_after_another_run_on_the_same_thread():
    app = Recording()
    threads = RequestThreads(app)

    async def three():
        for _ in range(3):
            await request(threads)

    asyncio.run(three())
    assert len(app.threads) == 6 and len(set(app.threads)) == 1
    assert app.threads[0] != threading.get_ident()


def test_concurrent_requests_each_have_a_thread_and_only_idle_ones_are_kept():
    async def scenario():
        hold = asyncio.Event()
        app = Recording(hold)
        threads = RequestThreads(app, idle=2)
        running = [asyncio.create_task(request(threads)) for _ in range(4)]
        while len(app.threads) < 4:
            await asyncio.sleep(0.01)
        hold.set()
        await asyncio.gather(*running)
        return app, threads

    app, threads = asyncio.run(scenario())
    first, second = app.threads[:4], app.threads[4:]
    assert len(set(first)) == 4 and sorted(first) == sorted(second)  # one thread each, kept for the request
    assert threads.kept == 2  # the two beyond `idle` were closed


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
def test_other_connections_pass_through(kind):
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["type"], threading.get_ident()))

    asyncio.run(RequestThreads(app)({"type": kind}, None, None))
    assert seen == [(kind, threading.get_ident())]


@pytest.mark.django_db(transaction=True)
def test_a_request_through_the_asgi_application_runs_its_middleware_in_one_block(settings):
    """Django hands each async-capable MiddlewareMixin middleware's process_request and process_response to the
    request's thread separately unless a sync-only middleware sits below it (settings.MIDDLEWARE: WhiteNoise's,
    innermost): the whole stack then runs on the thread in one go. Django says where it adapts the stack in the
    `django.request` logger's debug messages (with DEBUG on): here once, at the innermost middleware."""
    from django.core.handlers.asgi import ASGIHandler
    from django.db import connections

    from chatter_project.asgi import application

    settings.DEBUG = True
    logger, records = logging.getLogger("django.request"), []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        ASGIHandler()  # loads the middleware stack as the ASGI application's handler does
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    adapted = [record.getMessage() for record in records if "handler adapted for" in record.getMessage()]
    assert adapted == [f"Asynchronous handler adapted for middleware {settings.MIDDLEWARE[-1]}."], adapted
    assert settings.MIDDLEWARE[-1] == "whitenoise.middleware.WhiteNoiseMiddleware"

    sent = []
    bodies = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if bodies:
            return bodies.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/v1/conversations/", "raw_path": b"/api/v1/conversations/", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000)}
    asyncio.run(application(scope, receive, send))
    connections.close_all()
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
