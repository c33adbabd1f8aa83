"""The process's chainer (audit.services.chainer): appends the audit rows runs queued (audit.services.audit_queue).

A run that queued rows wakes it when its transaction commits. The chainer first gathers what more runs queue
meanwhile (GATHER_S: one pass appends the rows of every run of that time, under load and in sequential turns
alike), then takes the chain; it keeps trying until it finds the queue empty, so a queued row never waits for the
next writer, however long that is. Rows committed before a wake are either still queued or already in the chain (only a
committed holder takes them off). It runs on a thread of its own, which gives its pooled connection back between
wakes. A queue left by a process that died is appended by the next writer of the chain.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError, connection

from core.db import connections_give_back

logger = logging.getLogger(__name__)
GATHER_S = 0.25  # after a wake: rows queued meanwhile are appended together (reads append the queue first)
RETRY_S = 0.05  # after finding the chain held (its holder appends what is queued)
FAILURE_RETRY_S = 1.0  # after a database error
EXIT_DRAIN_S = 2.0  # at most, at exit
BUSY, CHAINED, NONE = "busy", "chained", "none"  # what one try did


class Chainer:
    """`any_queued()` says whether a row is queued; `chain_once()` appends the oldest queued rows if it can hold the
    chain, returning BUSY (it could not), CHAINED (call again) or NONE (held, nothing queued)."""

    def __init__(self, *, any_queued: Callable[[], bool], chain_once: Callable[[], str]) -> None:
        self.any_queued = any_queued
        self.chain_once = chain_once
        self._woken = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        self._woken.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="chatter-audit-chainer", daemon=True)
                    self._thread.start()

    def drain(self, timeout: float = EXIT_DRAIN_S) -> None:
        """At exit (a command's run, a server stopping): append what this process queued since its last pass, now,
        rather than leaving it for the next writer of the chain; gives up after `timeout` s if the chain stays held."""
        if not self._woken.is_set():
            return  # nothing was queued here since the thread's last pass began (or the last drain)
        self._woken.clear()  # what woke the thread so far is appended here: its pass waits for a new wake
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    outcome = self.chain_once() if self.any_queued() else NONE
                except Exception:  # noqa: BLE001 - at exit: the queue stays for the next writer
                    logger.warning("audit chainer: could not append the queued rows at exit; the next writer of the "
                                   "chain will")
                    return
                if outcome == NONE:
                    return
                if outcome == BUSY:
                    time.sleep(RETRY_S)
        finally:
            connections_give_back()

    def after_fork(self) -> None:
        """A forked child has no chainer thread: the next wake starts its own."""
        self._woken = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            self._woken.wait()
            time.sleep(GATHER_S)
            if not self._woken.is_set():
                continue  # a drain appended what woke it
            self._woken.clear()  # wakes from here on get a pass of their own
            try:
                self._chain_queue()
            except Exception:  # noqa: BLE001 - logged; the queue is appended by the next writer or wake
                pass
            connections_give_back()

    def _chain_queue(self) -> None:
        while True:
            try:
                outcome = self.chain_once()
            except Exception as error:  # noqa: BLE001 - the thread must outlive any one failure
                logger.exception("audit chainer: could not append the queued rows; retrying")
                if not isinstance(error, DatabaseError):
                    raise
                connection.close()
                time.sleep(FAILURE_RETRY_S)
                continue
            if outcome == NONE:
                return
            if outcome == BUSY:
                time.sleep(RETRY_S)
