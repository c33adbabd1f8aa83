"""The two things serving adds to Django's own ASGI handler (`get_asgi_application()`), each for a measured gain.

1. `RequestThreads`: a request's synchronous work runs on a thread that outlives the request. Django's handler
   gives each request a `ThreadSensitiveContext` of its own, so a new thread, and database connections are per
   thread: every request opened one (SQLite reads the schema and runs the PRAGMAs again; PostgreSQL checks one out
   of the pool on a new thread). asgiref documents how to choose that thread: an outer
   `ThreadSensitiveContext(executor=...)`, inside which Django's own context is a no-op, with a one-thread executor
   the caller owns and may use again. Sync chat turn over daphne, SQLite: 19.9 -> 13.6 ms (bench/RESULTS.md, B5).
2. `tune_collector()`: the objects loaded at start-up are frozen out of the collector's full passes (one traversed
   ~266k of them every ~45 turns: a 144 ms pause; B5 sequential p95 -11 ms), and young collections run less often
   (the collector's pauses per chat turn 0.39-0.60 -> 0.13-0.20 ms, B5 in process).

And what serving tells the rest of the process: whether the server has stopped serving (`serving_stopped`).
"""
from __future__ import annotations

import asyncio
import gc
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.db import connections

_serving_loop: asyncio.AbstractEventLoop | None = None  # the event loop the server serves on, from its first request


def serving_stopped() -> bool:
    """Whether this process's server has stopped serving (the event loop it served requests on no longer runs: it
    was stopped, by SIGTERM or Ctrl-C), so the process is exiting: Python now waits for the threads still working
    (concurrent.futures joins its executors' threads, the runner's and the requests' among them, before anything
    registered with atexit runs, so no exit handler can tell them). A thread that would wait long (a run's ending, for
    the database to come back) gives up instead. False in a process that served no request (a command, a worker)."""
    loop = _serving_loop
    return loop is not None and not loop.is_running()


class RequestThreads:
    """ASGI middleware: each HTTP request borrows an idle one-thread executor (or makes one: nothing waits here,
    concurrency is bounded by the server and the database pool) and gives it back; its thread keeps its SQLite
    connection (CONN_MAX_AGE=None) or borrows from Django's PostgreSQL pool. At most `idle` executors are kept; one
    more is closed, its connections with it."""

    def __init__(self, app, *, idle: int = 16) -> None:
        self.app = app
        self.idle = idle
        self._executors: list[ThreadPoolExecutor] = []

    @property
    def kept(self) -> int:
        """How many idle request threads are kept for the next requests."""
        return len(self._executors)

    async def __call__(self, scope, receive, send) -> None:
        global _serving_loop
        if _serving_loop is None:
            _serving_loop = asyncio.get_running_loop()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        executor = self._executors.pop() if self._executors else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="request")
        keep = False
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
            keep = len(self._executors) < self.idle
        finally:
            # A request that raised out of Django's handler (a stream that failed) was not closed: its thread may
            # still hold a connection borrowed from the pool, so it goes, as one more than `idle` does.
            if keep:
                self._executors.append(executor)
            else:
                executor.submit(connections.close_all)
                executor.shutdown(wait=False)


def tune_collector() -> None:
    """Call once the application is loaded: what is loaded by then (Django, DRF, LangChain, pydantic) lives as
    long as the server."""
    gc.freeze()
    # A request leaves few cycles behind, but at the default thresholds its allocations set off young and middle
    # collections every turn or two: fewer, larger young collections cost less in all.
    gc.set_threshold(20_000, 20, 50)
