"""HTTP through Django's own request handling, in one hand-off from the event loop to a request thread.

Django's ASGI handler (`get_asgi_application()`) loads the middleware for an asynchronous stack. With synchronous
middleware and views (DRF's) a request then crosses between the event loop and a thread five times:
`request_started`, the middleware, back to the loop for the handler's innermost (asynchronous) step, to the
thread again for the view, and `response.close()` after the answer. Each crossing wakes the other side; after
idle time each wake costs tens of microseconds more (bench/RESULTS.md, B5: about a millisecond of a request).

This handler is Django's WSGI handler behind an ASGI front. Like `WSGIHandler`, it is a `BaseHandler` that loads
the same middleware synchronously and serves each request with `get_response()` between `request_started` and
`request_finished`. The body is read on the loop, then the request is handled on its thread in one go: the
signals, the middleware and the view, and for a whole (not streaming) response its closing too. The answer is
then sent from the loop. A streaming response (an SSE feed: an async iterator) is sent as Django's ASGI handler
sends it, is stopped when the client goes away, and is closed on its thread afterwards. A view written `async`
still runs, as under WSGI: on the request's thread, scheduled back onto this event loop.

Request threads outlive their request. On SQLite, opening a database connection reads the schema and runs the
PRAGMAs again, which cost more than most requests' statements. So a request borrows an idle one-thread executor,
or makes one when none is idle; nothing waits here, since concurrency is still bounded by the server and the
database pool. The request gives the executor back afterwards. asgiref documents this way of choosing the
thread: a `ThreadSensitiveContext(executor=...)` with a single-worker executor the caller owns and "may use
again for a later block, for example in a pool". Its thread keeps its connection (SQLite, CONN_MAX_AGE=None) or
borrows from Django's pool (PostgreSQL). At most `idle` executors are kept; one more is closed, its connections
with it.
"""
from __future__ import annotations

import asyncio
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.urls import set_script_prefix

logger = logging.getLogger("django.request")


class HttpHandler(BaseHandler):
    """The ASGI application of Django's HTTP requests (one per process)."""

    request_class = ASGIRequest

    def __init__(self, *, idle: int = 16) -> None:
        super().__init__()
        self.load_middleware()  # synchronous, as Django's WSGI handler loads it
        self.idle = idle
        self._executors: list[ThreadPoolExecutor] = []

    @property
    def kept(self) -> int:
        """How many idle request threads are kept for the next requests."""
        return len(self._executors)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django serves HTTP connections, not {scope['type']}")
        body = await _request_body(receive)
        if body is None:  # the client went away before its request was whole
            return
        executor = self._executors.pop() if self._executors else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                response = await sync_to_async(self.respond, thread_sensitive=True)(scope, body)
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": _headers(response)})
                if response.streaming:
                    try:
                        await _streamed(response, receive, send)
                    finally:  # a stream that failed is closed too: its thread's connection goes back to the pool
                        await sync_to_async(response.close, thread_sensitive=True)()
                else:
                    await send({"type": "http.response.body", "body": response.content})
        finally:
            body.close()
            if len(self._executors) < self.idle:
                self._executors.append(executor)
            else:
                executor.submit(connections.close_all)
                executor.shutdown(wait=False)

    def respond(self, scope, body) -> HttpResponseBase:
        """On the request's thread: `request_started`, the request through the middleware and its view, and a
        whole response closed (`request_finished`: the thread's database connection goes back to the pool before
        the answer leaves); a streaming one is closed once it has been sent."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        try:
            response = self.get_response(self.request_class(scope, body))
        except UnicodeDecodeError:  # a path or query that is not UTF-8 (as Django's ASGI handler answers it)
            logger.warning("Bad Request (UnicodeDecodeError)", exc_info=True, extra={"status_code": 400})
            response = HttpResponseBadRequest()
        except RequestDataTooBig:
            response = HttpResponse("413 Payload too large", status=413)
        if not response.streaming:
            response.close()
        return response


async def _request_body(receive):
    """The request's body (in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then on disk), or None when the client
    disconnected first."""
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.close()
            return None
        body.write(message.get("body", b""))
        if not message.get("more_body", False):
            body.seek(0)
            return body


def _headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    """The response's headers and cookies as ASGI sends them (the names' case kept: some clients need it)."""
    headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
    headers += [(b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
                for cookie in response.cookies.values()]
    return headers


async def _streamed(response: HttpResponseBase, receive, send) -> None:
    """Send a streaming response's parts as they come, until it ends or the client disconnects (then the stream
    is cancelled: an SSE feed's `finally` lets go of its subscription)."""
    async def parts() -> None:
        async with aclosing(aiter(response)) as content:  # aiter(): a synchronous iterator too, as Django maps it
            async for part in content:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    streaming, listening = asyncio.create_task(parts()), asyncio.create_task(disconnected())
    try:
        await asyncio.wait((streaming, listening), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (listening, streaming):
            if not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
    if streaming.done() and not streaming.cancelled():
        streaming.result()  # a stream that failed raises here, as it would under Django's ASGI handler
