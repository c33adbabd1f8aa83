"""How much database work one process takes on at once (SPEC §1 scale-out).

Under ASGI every request in flight has a thread of its own, and a thread holds its own database connection. A
burst of 200 turns would open 200 connections at once (past PostgreSQL's max_connections the rest fail), and
most of them would only queue on the same row and chain locks. Instead a process works on at most
CHATTER_CONCURRENCY requests and runs at once; the others wait here for a slot, holding no connection and no
lock. A request that waited CHATTER_QUEUE_TIMEOUT_S is answered 503; a run that
was accepted waits as long as it takes (it stays `pending` meanwhile, and the sweep's rules apply to it).

Nothing that holds a slot waits for another slot: a streaming request queues its run on a thread (its own,
where it runs once the view has returned) and returns, a sync run runs in its request's slot, and background
runs are the worker's (one per worker process).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connections

from chatter_project.errors import Unavailable

_lock = threading.Lock()
_slots: tuple[int, threading.BoundedSemaphore] | None = None


def _semaphore() -> threading.BoundedSemaphore:
    global _slots
    size = settings.CHATTER_CONCURRENCY
    with _lock:
        if _slots is None or _slots[0] != size:  # tests change the setting
            _slots = (size, threading.BoundedSemaphore(size))
        return _slots[1]


def _forget_after_fork() -> None:
    global _slots
    _slots = None  # a forked child owns none of its parent's slots


os.register_at_fork(after_in_child=_forget_after_fork)


@contextmanager
def work_slot(*, timeout: float | None = None) -> Iterator[None]:
    """Hold one of the process's slots for the block; wait up to `timeout` s (forever with None), then 503.
    A thread that has to wait gives its database connections back first: waiting holds no connection."""
    slots = _semaphore()
    if not slots.acquire(blocking=False):
        _connections_close()
        if not slots.acquire(timeout=timeout):
            raise Unavailable(f"the server is busy: no capacity freed up within {timeout:g} s; try again",
                              code="server_busy", details={"retry_after": 1})
    try:
        yield
    finally:
        slots.release()


def _connections_close() -> None:
    """Close this thread's database connections (those outside a transaction: a test's stays open)."""
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close()
