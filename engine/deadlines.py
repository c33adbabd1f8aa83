"""The time a provider call must end by: its run's deadline (RunContext), set around the call, which the HTTP client of
the openai calls (engine.openai_http) holds every request of the call to, the client library's retries included.
A client library gives each request (each retry) the whole of its timeout again: a run whose upstream never answered
lasted its timeout once per retry."""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)


@contextmanager
def call_deadline(at: float) -> Iterator[None]:
    """The provider calls made in this block end by `at` (a time.monotonic() reading)."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def call_time_left() -> float | None:
    """Seconds left to the deadline of the call this context makes (0 or less: past it); None: it has none."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()
