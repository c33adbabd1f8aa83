"""The one event path (SPEC §6): build the envelope, persist it with the next seq, publish after commit.

Token deltas are published at once and never persisted. Publishing (realtime.broadcast) runs only after
the data an event describes is committed.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from django.db import transaction
from django.utils import timezone

from chatter_project.metrics import EVENT_LATENCY
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


def events_record(*, execution_id, first_seq: int, items: list[tuple[str, dict, datetime]], sink: Sink | None,
                  owner_id) -> list[dict]:
    """Persist consecutive events (`(event, data, when)` each, seq from `first_seq` on) with one INSERT inside the
    caller's transaction, and publish them, in order, once that commits."""
    if not items:
        return []
    rows = [ExecutionEvent(execution_id=execution_id, seq=first_seq + offset, event=event, data=data, created_at=ts)
            for offset, (event, data, ts) in enumerate(items)]
    ExecutionEvent.objects.bulk_create(rows)
    envelopes = [event_envelope(execution_id=execution_id, event=row.event, data=row.data, seq=row.seq,
                                ts=row.created_at) for row in rows]
    transaction.on_commit(lambda: events_publish(envelopes, sink=sink, owner_id=owner_id))
    return envelopes


def event_record(*, execution_id, seq: int, event: str, data: dict, sink: Sink | None, owner_id) -> dict:
    """Persist one event (inside the caller's transaction) and publish it once that commits."""
    return events_record(execution_id=execution_id, first_seq=seq, items=[(event, data, timezone.now())], sink=sink,
                         owner_id=owner_id)[0]


def event_publish(envelope: dict, *, sink: Sink | None, owner_id) -> None:
    """Deliver an event to whoever is watching: the run's own consumer (sink) and, through the channel layer,
    websocket and SSE watchers anywhere. Never raises and never waits: a gone watcher must not break a run."""
    events_publish([envelope], sink=sink, owner_id=owner_id)


def events_publish(envelopes: list[dict], *, sink: Sink | None, owner_id) -> None:
    """event_publish for events committed together: one hand-off to the broadcaster for all of them, in order."""
    realtime.broadcast_many(envelopes, owner_id=owner_id)
    now = timezone.now()
    for envelope in envelopes:
        if envelope["seq"] is not None:  # persisted events: from their timestamp to the hand-off (/metrics)
            EVENT_LATENCY.observe(max(0.0, (now - datetime.fromisoformat(envelope["ts"])).total_seconds()))
    if sink is not None:
        for envelope in envelopes:
            try:
                sink(envelope)
            except Exception:  # noqa: BLE001
                pass
