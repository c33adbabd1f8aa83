"""The write a run makes as a model call starts, made on a writer thread while the call goes out
(docs/architecture.md#when-a-run-writes): the run's first token then waits for the model, not for the write too.
`WriteBehind` holds a recorder's one write under way; each of the recorder's methods waits for it first
(trace_rows.one_at_a_time), so nothing the run does next is held, written or published before it. The fragments a
reply streams meanwhile (tokens) wait for it without the run: they are published right after its events."""
from __future__ import annotations

import threading
from concurrent.futures import Future
from time import monotonic
from typing import Callable

from core.db import connections_give_back
from core.errors import RunError
from core.threads import ProcessThreads

WRITER_THREADS = 4  # writes take about a millisecond; a run waits for its own only at its model's first answer
# How long a reply's fragments wait for a write no writer has taken (a machine too busy to run the writer): then the
# run makes the write itself, and what it streams goes out live again. A model that answers within it (B1's, at once)
# leaves the write to be folded into the run's next one.
HELD_AT_MOST_S = 0.05

_threads = ProcessThreads(lambda: WRITER_THREADS, "chatter-write")


class Fragments:
    """What a run streamed while its write was under way (tokens, not persisted): published by whichever thread
    makes that write, right after the write's events, or dropped with a write that failed (nothing is streamed
    past it). Once the write is made, nothing more is taken: the run publishes at once."""

    def __init__(self, publish: Callable[[list], None]) -> None:
        self._publish = publish
        self._items: list = []
        self._open = True
        self.failed = False  # the write failed: what was taken was dropped
        self._lock = threading.Lock()

    def add(self, item) -> bool:
        """Take `item` to publish after the write; False once the write was made (publish it at once)."""
        with self._lock:
            if self._open:
                self._items.append(item)
            return self._open

    def close(self, *, publish: bool, failed: bool = False) -> list:
        """Take no more; publish what was taken (under the lock: a later item, published at once, comes after it),
        or not, and return it. `failed`: the write failed."""
        with self._lock:
            self._open, self.failed = False, failed
            items, self._items = self._items, []
            if publish and items:
                self._publish(items)
            return items


def _made(write: Callable[[], None], fragments: Fragments) -> None:
    try:
        write()
    except BaseException:
        fragments.close(publish=False, failed=True)
        raise
    fragments.close(publish=True)


def _written(write: Callable[[], None], fragments: Fragments) -> None:
    try:
        _made(write, fragments)
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
        self._fragments: Fragments | None = None
        self._created: Future | None = None
        self._then: Callable[[object], None] | None = None
        self._held_since: float | None = None  # when the write under way first held a fragment

    def after(self, created: Future, then: Callable[[object], None]) -> None:
        """Wait first for `created`, the run's creation its request is writing on its own thread (its result: what
        the run needs of it), then call `then` with that result. If it fails, this settle and every later one raise
        NotCreated."""
        self._created, self._then = created, then

    def hand(self, write: Callable[[], None], publish: Callable[[list], None]) -> None:
        """Make `write` on a writer thread (after the one under way, which is waited for first); what is `attach`ed
        meanwhile is given to `publish` right after it."""
        self.settle()
        self._fragments, self._held_since = Fragments(publish), None
        self._pending, self._write = _threads.submit(_written, write, self._fragments), write

    def attach(self, item) -> bool:
        """Publish `item` right after the write under way; False when there is none, or it was made (publish it
        at once). If it failed, what it raised is raised here (settle): nothing is streamed past it. Fragments held
        HELD_AT_MOST_S have the write made (or waited for) here, and go out with it."""
        if self._fragments is None:
            return False
        if self._fragments.add(item):
            now = monotonic()
            if self._held_since is None:
                self._held_since = now
            elif now - self._held_since > HELD_AT_MOST_S:
                self.settle()
                connections_give_back()  # the run goes back to waiting on its model's stream
            return True
        if self._fragments.failed:
            self.settle()
        return False

    @property
    def under_way(self) -> bool:
        """A write was handed and not yet waited for."""
        return self._pending is not None

    def settle(self, *, fold: bool = False) -> list:
        """Wait for the write under way, if any; what it raised is raised here, as the run's end (a RunError: raised
        inside a model call's stream, anything else would read as the provider's failure). `fold`: a write no writer
        has taken yet is not made, its owner still holding what it would have written, for its next write: what was
        attached to it is returned, to publish after that one's events."""
        if self._created is not None:
            if not self._created.done():
                connections_give_back()  # (a waiting thread holds none: the request may need it to finish)
            if self._created.exception() is not None:  # (waits for it)
                raise NotCreated()
            created, self._created = self._created, None
            self._then(created.result())
        pending, write, fragments = self._pending, self._write, self._fragments
        self._pending = self._write = self._fragments = None
        if pending is None:
            return []
        try:
            if not pending.cancel():
                if not pending.done():  # a writer is making it: it may need the pooled connection this thread holds
                    connections_give_back()
                pending.result()
            elif fold:  # no writer has taken it yet: the owner's next write makes it
                return fragments.close(publish=False)
            else:  # no writer has taken it yet (the run never let go of the GIL): made here
                _made(write, fragments)
        except RunError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database's refusal, or a conflict past its retries
            raise RunError(f"the run's trace could not be written: {type(exc).__name__}: {exc}",
                           error_type="internal_error") from exc
        return []
