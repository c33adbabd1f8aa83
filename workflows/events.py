"""The one event path (docs/architecture.md#the-event-bus): build the envelope, persist it with the next seq, publish
after commit.

Every event of a run goes this way: the recorder persists it (`event_rows`, written inside the transaction that
writes what it describes, usually by the same statement) and it is published once that commits
(`events_published_on_commit`); token deltas and conversation_updated are published at once and never persisted.
Publishing hands the events to the hub (workflows.hub), which every reader reads from.
"""
from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone
from prometheus_client import Histogram

from core.money import usd
from workflows.hub import TERMINAL_EVENTS, hub
from workflows.statements import events_insert

__all__ = ["TERMINAL_EVENTS", "EVENT_LATENCY", "conversation_updated_data", "event_envelope", "event_rows",
           "events_published_on_commit", "events_publish"]

# Registered by the /metrics view's registry (chatter_project.metrics).
EVENT_LATENCY = Histogram(
    "chatter_event_publish_latency_seconds", "Time from a persisted event's timestamp to its hand-off to the hub.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=None,
)


def event_envelope(*, execution_id, event: str, data: dict, seq: int | None, ts=None) -> dict:
    ts = ts or timezone.now()
    return {
        "event": event,
        "execution_id": str(execution_id),
        "seq": seq,
        "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }


def conversation_updated_data(conversation) -> dict:
    """What `conversation_updated` says: the conversation's totals as they are now."""
    return {"conversation_id": str(conversation.pk),
            **{name: getattr(conversation, name)
               for name in ("message_count", "prompt_tokens", "completion_tokens", "total_tokens")},
            "total_cost": usd(conversation.total_cost)}


def event_rows(*, execution_id, first_seq: int, items: list[tuple[str, dict, datetime]]) -> tuple[str, list]:
    """Consecutive events (`(event, data, when)` each, seq from `first_seq` on) as the statement that inserts them
    (SQL, params), for the caller to run in its transaction, on its own or along with another
    (core.db.statements_run); the caller then calls events_published_on_commit in the same
    transaction."""
    return events_insert.bound([{"execution_id": execution_id, "seq": first_seq + offset, "event": event,
                                 "data": data, "created_at": ts} for offset, (event, data, ts) in enumerate(items)])


def events_published_on_commit(*, execution_id, first_seq: int, items: list[tuple[str, dict, datetime]], owner_id,
                               owner_only: tuple[dict, ...] = (), watchable: bool = True,
                               live: list[tuple[int, dict]] = ()) -> list[dict]:
    """Publish written events (and `owner_only` ones after them) once the caller's transaction commits; not
    `watchable` when that transaction inserts the run's row (workflows.hub.Hub.publish). `live`: envelopes not
    persisted (tokens), each with how many of `items` come before it."""
    execution_id = str(execution_id)  # (once, not an envelope's each)
    envelopes = [event_envelope(execution_id=execution_id, event=event, data=data, seq=first_seq + offset, ts=ts)
                 for offset, (event, data, ts) in enumerate(items)]
    for position, envelope in reversed(live):  # (from the last: an earlier one's place is not moved)
        envelopes.insert(position, envelope)
    transaction.on_commit(lambda: events_publish(envelopes, owner_id=owner_id, owner_only=owner_only,
                                                 watchable=watchable))
    return envelopes


def events_publish(envelopes: list[dict], *, owner_id, owner_only: tuple[dict, ...] = (),
                   watchable: bool = True) -> None:
    """Hand events to whoever watches, here and in other processes. Never raises and never waits."""
    hub.publish(envelopes, owner_id=owner_id, owner_only=list(owner_only), watchable=watchable)
    now = None
    for envelope in envelopes:
        if envelope["seq"] is not None:  # persisted events: from their timestamp to the hand-off (/metrics)
            now = now or timezone.now()  # (a token's hand-off, not persisted, asks for no time)
            EVENT_LATENCY.observe(max(0.0, (now - datetime.fromisoformat(envelope["ts"])).total_seconds()))
