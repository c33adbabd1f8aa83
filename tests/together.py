"""Requests released together, as a team's clients send them: `at_once(count, call)` calls `call(0)` ...
`call(count - 1)` in threads of their own that a barrier releases at the same instant, each closing its database
connections as it ends, and returns what they returned, in order."""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connections

T = TypeVar("T")


def at_once(count: int, call: Callable[[int], T]) -> list[T]:
    barrier = threading.Barrier(count)

    def released(index: int) -> T:
        try:
            barrier.wait(60)
            return call(index)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(released, range(count)))
