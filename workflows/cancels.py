"""Cancelling a running run: asked in this process, or polled from the run's row when asked in another."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from django.db import InterfaceError, OperationalError, connection

from core.db import connections_give_back
from core.threads import ProcessThreads
from engine.runtime import RunInterrupted
from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)
CANCEL_POLL_S = 0.2

# The polls of runs whose database is out of reach, each made while its run goes on (CancelWatch._poll_aside).
_aside = ProcessThreads(lambda: 4, "chatter-cancel-poll")

_local_cancels: set[str] = set()
_local_cancels_lock = threading.Lock()


def cancel_signal_local(execution_id) -> None:
    """Tell the run, if this process runs it, at its next check."""
    with _local_cancels_lock:
        _local_cancels.add(str(execution_id))


class CancelWatch:
    """Whether one run was asked to stop. `fresh`: the run was just created or claimed here, so its row is not
    polled at once."""

    def __init__(self, execution_id, *, fresh: bool = False):
        self.execution_id = execution_id
        self._key = str(execution_id)  # (as _local_cancels holds it: asked at every check, about 20 a chat turn)
        self.cancelled = False
        self._polled = time.monotonic() if fresh else 0.0
        self._unread = False  # the last poll could not read the run's row (the database unreachable)
        self._polling: Future | None = None  # a poll made off the run's thread while the database is unreachable

    def asked(self) -> bool:
        """Whether the run was asked to stop; RunInterrupted when it was ended elsewhere (the recovery sweep). A
        poll that cannot reach the database is no cancel, as far as is known: the run goes on, and while the database
        stays out of reach its next polls are made on a thread of their own, each once the last has failed, so that
        none holds up the model's reply as it waits for a connection; the first that reads the row again tells its
        cancel (a cancel asked in this process still stops the run at once). Its ending books the run once the
        database is back (docs/operations/durable-runs.md)."""
        if self.cancelled:
            return True
        if self._key in _local_cancels:
            self.cancelled = True
        elif self._unread:
            self._poll_aside()
        elif time.monotonic() - self._polled >= CANCEL_POLL_S:
            try:
                row = self._row()
            except (OperationalError, InterfaceError):
                if connection.in_atomic_block:  # a caller's transaction, broken by it: the caller's to end
                    raise
                logger.warning("execution %s: its cancel check cannot read the database; it goes on",
                               self.execution_id, exc_info=True)
                self._unread = True
                return False
            finally:
                self._polled = time.monotonic()  # (after a read that may have waited the pool's timeout)
            self._read(row)
        return self.cancelled

    def _poll_aside(self) -> None:
        """While the database is out of reach: take the result of the poll made aside, if it is done, and make the
        next one once CANCEL_POLL_S has passed since."""
        if self._polling is not None:
            if not self._polling.done():
                return
            polled, self._polling = self._polling, None
            self._polled = time.monotonic()
            if polled.exception() is None:
                logger.info("execution %s: its cancel check reads the database again", self.execution_id)
                self._unread = False
                self._read(polled.result())
                return
        if time.monotonic() - self._polled >= CANCEL_POLL_S:
            self._polling = _aside.submit(self._row)

    def _row(self) -> tuple | None:
        try:
            return WorkflowExecution.objects.filter(pk=self.execution_id).values_list(
                "status", "cancel_requested").first()
        finally:
            connections_give_back()  # polled while the run waits on its model: it holds no pooled connection

    def _read(self, row: tuple | None) -> None:
        if row is None or row[0] != WorkflowExecution.Status.RUNNING:  # ended elsewhere: stop spending
            raise RunInterrupted("the run was ended while it was still running")
        self.cancelled = row[1]

    def forget(self) -> None:
        """The run ends in this process: a cancel asked here has nothing left to tell."""
        with _local_cancels_lock:
            _local_cancels.discard(self._key)
