"""The one event path (SPEC §6): build the envelope, persist it with the next seq, publish after commit.

Token deltas are published at once and never persisted. Publishing (realtime.broadcast) runs only after
the data an event describes is committed.
"""
from __future__ import annotations

from typing import Callable

from django.db import transaction
from django.utils import timezone

from workflows import realtime
from workflows.models import ExecutionEvent

Sink = Callable[[dict], None]
TERMINAL_EVENTS = ("workflow_completed", "workflow_failed", "workflow_cancelled")


def event_envelope(*, execution_id, event: str, data: dict, seq: int | None, ts=None) -> dict:
    ts = ts or timezone.now()
    return {
        "event": event,
        "execution_id": str(execution_id),
        "seq": seq,
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }


def event_record(*, execution_id, seq: int, event: str, data: dict, sink: Sink | None, owner_id) -> dict:
    """Persist one event (inside the caller's transaction) and publish it once that commits."""
    now = timezone.now()
    ExecutionEvent.objects.create(execution_id=execution_id, seq=seq, event=event, data=data, created_at=now)
    envelope = event_envelope(execution_id=execution_id, event=event, data=data, seq=seq, ts=now)
    transaction.on_commit(lambda: event_publish(envelope, sink=sink, owner_id=owner_id))
    return envelope


def event_publish(envelope: dict, *, sink: Sink | None, owner_id) -> None:
    """Deliver an event to whoever is watching: the run's own consumer (sink) and, through the channel layer,
    websocket and SSE watchers anywhere. Never raises and never waits: a gone watcher must not break a run."""
    realtime.broadcast(envelope, owner_id=owner_id)
    if sink is not None:
        try:
            sink(envelope)
        except Exception:  # noqa: BLE001
            pass
