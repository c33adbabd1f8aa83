"""The heartbeat of the runs a process is running (docs/operations/audit.md#recovery): one thread refreshes their
`heartbeat_at` every HEARTBEAT_S, and carries what each run's call in flight has streamed so far (`stream_progress`),
so the recovery sweep knows a run whose process died, and what that call had already cost. A beat also clears the
run's `silent_since` (a sweep found it silent), in the same UPDATE."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import connections
from django.db.models import Case, F, JSONField, Value, When
from django.utils import timezone

from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)
HEARTBEAT_S = 5.0  # the sweep treats a run as orphaned after several missed beats (services.recovery)
RUNNING = WorkflowExecution.Status.RUNNING


class _Heartbeat:
    """Refreshes `heartbeat_at` of the runs this process is running, every HEARTBEAT_S, from one thread of its
    own, which exists only while there are runs to beat for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[str] = set()
        self._streams: dict[str, tuple[str, Any]] = {}  # run → (its call in flight, what that has streamed so far)
        self._thread: threading.Thread | None = None

    def add(self, execution_id) -> None:
        with self._lock:
            self._live.add(str(execution_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat_while_live, name="chatter-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, execution_id) -> None:
        with self._lock:
            self._live.discard(str(execution_id))
            self._streams.pop(str(execution_id), None)

    def stream(self, execution_id, *, call: str, so_far) -> None:
        """From now on each beat also carries what the run's call `call` has streamed (`so_far()`)."""
        with self._lock:
            self._streams[str(execution_id)] = (call, so_far)

    def stream_ended(self, execution_id) -> None:
        with self._lock:
            self._streams.pop(str(execution_id), None)

    def _beat_while_live(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self._lock:
                live = list(self._live)
                streams = [(pk, call, so_far) for pk, (call, so_far) in self._streams.items() if pk in self._live]
                if not live:
                    self._thread = None
                    return
            try:
                changes = {"heartbeat_at": timezone.now(), "silent_since": None}  # alive: a sweep's mark goes
                if streams:  # in the same statement: each streaming run gets its own progress
                    changes["stream_progress"] = Case(
                        *[When(pk=pk, then=Value({"call": call, **so_far()}, output_field=JSONField()))
                          for pk, call, so_far in streams],
                        default=F("stream_progress"), output_field=JSONField())
                WorkflowExecution.objects.filter(pk__in=live, status=RUNNING).update(**changes)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the sweep allows several
                logger.warning("could not refresh the heartbeat of %d runs", len(live), exc_info=True)
            finally:
                connections.close_all()  # this thread's connection only; it sleeps most of the time


heartbeat = _Heartbeat()
