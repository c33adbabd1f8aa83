"""The write a run makes as a model call starts, made on a writer thread while the call goes out
(docs/architecture.md#when-a-run-writes): the run's first token then waits for the model, not for the write too.
`WriteBehind` holds a recorder's one write under way; each of the recorder's methods waits for it first
(trace_rows.one_at_a_time), so nothing the run does next is held, written or published before it."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Callable

from core.db import connections_give_back
from core.errors import RunError
from core.threads import ProcessThreads

WRITER_THREADS = 4  # writes take about a millisecond; a run waits for its own only at its model's first answer

_threads = ProcessThreads(lambda: WRITER_THREADS, "chatter-write")


def _written(write: Callable[[], None]) -> None:
    try:
        write()
    finally:
        connections_give_back()  # a pooled connection goes back at once (SQLite's stays with the thread)


class NotCreated(Exception):
    """The run's creation, written by its request while the run started, was refused (the request answered why):
    the run has no row, and ends with nothing written (workflows.runner)."""


class WriteBehind:
    """One write under way on a writer thread, or none; before it, for a run started while its request wrote it,
    that creation (`after`). Its owner calls `hand` and `settle` one thread at a time (under the recorder's lock)."""

    def __init__(self) -> None:
        self._pending: Future | None = None
        self._write: Callable[[], None] | None = None
        self._created: Future | None = None
        self._then: Callable[[object], None] | None = None

    def after(self, created: Future, then: Callable[[object], None]) -> None:
        """Wait first for `created`, the run's creation its request is writing on its own thread (its result: what
        the run needs of it), then call `then` with that result. If it fails, this settle and every later one raise
        NotCreated."""
        self._created, self._then = created, then

    def hand(self, write: Callable[[], None]) -> None:
        """Make `write` on a writer thread (after the one under way, which is waited for first)."""
        self.settle()
        self._pending, self._write = _threads.submit(_written, write), write

    @property
    def under_way(self) -> bool:
        """A write was handed and not yet waited for."""
        return self._pending is not None

    def settle(self) -> None:
        """Wait for the write under way, if any; what it raised is raised here, as the run's end (a RunError: raised
        inside a model call's stream, anything else would read as the provider's failure)."""
        if self._created is not None:
            if self._created.exception() is not None:  # (waits for it)
                raise NotCreated()
            created, self._created = self._created, None
            self._then(created.result())
        pending, write, self._pending, self._write = self._pending, self._write, None, None
        if pending is None:
            return
        try:
            if pending.cancel():  # no writer has taken it yet (the run never let go of the GIL): made here
                write()
            else:
                pending.result()
        except RunError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database's refusal, or a conflict past its retries
            raise RunError(f"the run's trace could not be written: {type(exc).__name__}: {exc}",
                           error_type="internal_error") from exc
