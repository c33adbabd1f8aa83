"""Django's ASGI handler, with request threads that serve more than one request (B5).

Django runs each HTTP request's sync code (middleware, views, the ORM) in a thread of its own, made for the
request and ended with it (asgiref's ThreadSensitiveContext). Database connections belong to a thread, so every
request opened a new PostgreSQL connection: a backend fork and a SCRAM exchange (about 6 ms), then statements on
a backend whose catalog caches are cold (a few ms more per turn). Here a request still gets a thread to itself,
but one that an earlier, finished request used: its connection (CONN_MAX_AGE, health-checked) serves the next
request. Threads are made as concurrency needs them; at most MAX_IDLE wait for a request, and one idle for IDLE_S
closes its connections and ends, so a burst leaves no idle connections behind.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connections

IDLE_S = 30.0
MAX_IDLE = 8
SCOPE_KEY = "chatter.thread"  # the request's thread (its one-thread executor), in the request's ASGI scope


def request_thread(request) -> Executor | None:
    """The executor of the thread this request runs in, when it came through ThreadReusingASGIHandler: work
    submitted to it runs in this thread, with its connection, right after the view has returned."""
    return getattr(request, "scope", {}).get(SCOPE_KEY)


def _nothing() -> None:
    pass


class ThreadReusingASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        BaseHandler.__init__(self)
        # The middleware chain is loaded sync and runs, with the view, in the request's thread in one hand-off.
        # Loaded async (Django's default) it hopped between the loop and the thread ~16 times a request: WhiteNoise
        # and ours are sync-only, and each sync-and-async middleware runs its hooks through sync_to_async.
        self.load_middleware(is_async=False)
        self._idle: list[tuple[float, ThreadPoolExecutor]] = []  # (idle since, one-thread executor), oldest first
        self._retire_timer: asyncio.TimerHandle | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)  # Django refuses it
        executor = self._idle.pop()[1] if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle({**scope, SCOPE_KEY: executor}, receive, send)
        finally:
            self._release(executor, asyncio.get_running_loop())

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    def _release(self, executor: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop) -> None:
        """Back to the idle list once everything the request queued on the thread has run: a request the server
        cancelled (daphne does once its client has been gone a while) returns while its view still runs there (the
        run goes on and is recorded), and the next request must not wait behind it."""

        def done(_: Future) -> None:
            try:
                loop.call_soon_threadsafe(self._idle_add, executor)
            except RuntimeError:  # the server's loop is closed: it is shutting down
                self._retire(executor)

        executor.submit(_nothing).add_done_callback(done)

    def _idle_add(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) >= MAX_IDLE:
            self._retire(executor)
            return
        self._idle.append((time.monotonic(), executor))
        if self._retire_timer is None:
            self._retire_timer = asyncio.get_running_loop().call_later(IDLE_S, self._retire_idle)

    def _retire_idle(self) -> None:
        self._retire_timer = None
        now = time.monotonic()
        while self._idle and now - self._idle[0][0] >= IDLE_S:
            self._retire(self._idle.pop(0)[1])
        if self._idle:
            self._retire_timer = asyncio.get_running_loop().call_later(
                self._idle[0][0] + IDLE_S - now, self._retire_idle)

    @staticmethod
    def _retire(executor: ThreadPoolExecutor) -> None:
        executor.submit(connections.close_all)  # the thread's own connections: they are thread-local
        executor.shutdown(wait=False)
