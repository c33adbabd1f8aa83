"""Request threads that outlive their request: an ASGI middleware around Django's own handler.

Django's ASGI handler runs a request's synchronous work (middleware, view, ORM) on a thread made for that request
(asgiref's ThreadSensitiveContext), so every request opened a database connection of its own and closed it: on
SQLite, opening one reads the schema and runs the PRAGMAs again, which cost more than most requests' statements.
asgiref documents the way to choose that thread: an outer `ThreadSensitiveContext(executor=...)` (Django's own
context inside it is then a no-op), with a single-worker executor the caller owns and "may use again for a later
block, for example in a pool". So a request borrows an idle one-thread executor, or makes one when none is idle
(nothing waits here: concurrency is still bounded by the server and the database pool), and gives it back after;
its thread keeps its connection (SQLite, CONN_MAX_AGE=None) or borrows from Django's pool (PostgreSQL). At most
`idle` executors are kept; one more is closed, its connections with it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.db import connections


class RequestThreads:
    def __init__(self, app, *, idle: int = 16) -> None:
        self.app = app
        self.idle = idle
        self._executors: list[ThreadPoolExecutor] = []

    @property
    def kept(self) -> int:
        """How many idle request threads are kept for the next requests."""
        return len(self._executors)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        executor = self._executors.pop() if self._executors else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if len(self._executors) < self.idle:
                self._executors.append(executor)
            else:
                executor.submit(connections.close_all)
                executor.shutdown(wait=False)
