"""A process's own pool of threads, made at its first use and forgotten in a forked child (django-q2 forks its
workers, and a child owns none of its parent's threads)."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable


class ProcessThreads:
    """A ThreadPoolExecutor of `workers()` threads named `prefix`-N, made when first asked for."""

    def __init__(self, workers: Callable[[], int], prefix: str) -> None:
        self._workers, self._prefix = workers, prefix
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._under_way: set[Future] = set()

    def submit(self, fn: Callable, /, *args) -> Future:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers(), thread_name_prefix=self._prefix)
            future = self._pool.submit(fn, *args)
            self._under_way.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._under_way.discard(future)

    def settled(self, timeout_s: float) -> bool:
        """Wait, `timeout_s` at most, for the work submitted so far to end; whether it all has."""
        with self._lock:
            under_way = list(self._under_way)
        return not wait(under_way, timeout=timeout_s).not_done
