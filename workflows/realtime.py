"""The feeds every reader of run events uses (docs/api/rest.md#following-runs-live): the SSE of a streaming POST and
of `GET …/events/`, both websockets and the `chat` command read the same `execution_feed` / `user_feed`.

A run's feed is its persisted log from the database and then the live events from the hub, in seq order, without
gaps or duplicates: an event that the hub did not bring (the channel layer down, a full buffer) is read back from
the database when the next one shows the gap, or when the feed has been quiet.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import AsyncIterator, Iterator

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from workflows.events import TERMINAL_EVENTS, event_envelope
from workflows.hub import Subscription, access_topic, execution_topic, hub, user_topic
from workflows.models import ExecutionEvent, WorkflowExecution

POLL_S = 1.0


@database_sync_to_async
def _terminal_seq(execution_id) -> int | None:
    """The seq of the run's terminal event; 0 for a finished run whose log was pruned; None while it runs.

    The run's status is read first: its terminal event commits with it, so once the status says it ended, the
    event is there to read (read the other way round, a run ending in between looked ended with its log gone)."""
    if not WorkflowExecution.objects.filter(pk=execution_id, status__in=WorkflowExecution.TERMINAL).exists():
        return None
    row = ExecutionEvent.objects.filter(execution_id=execution_id, event__in=TERMINAL_EVENTS).first()
    return row.seq if row is not None else 0


@database_sync_to_async
def _persisted(execution_id, *, after: int, before: int | None = None) -> list[dict]:
    rows = ExecutionEvent.objects.filter(execution_id=execution_id, seq__gt=after)
    if before is not None:
        rows = rows.filter(seq__lt=before)
    return [event_envelope(execution_id=execution_id, event=row.event, data=row.data, seq=row.seq, ts=row.created_at)
            for row in rows.order_by("seq")]


def execution_subscribe(execution_id, *, remote: bool = True) -> Subscription:
    """Listen to a run; before it starts (a streaming request, the `chat` command), its feed needs no replay, and
    when this process runs it (`remote=False`) nothing needs to come through the channel layer."""
    return hub.subscribe([execution_topic(execution_id)], remote=remote)


async def execution_feed(execution_id, *, after: int = 0, subscription: Subscription | None = None,
                         replay: bool | None = None, poll_s: float = POLL_S) -> AsyncIterator[dict]:
    """Every event of one run with seq > after, in order, without gaps or duplicates, live tokens included; ends
    after the terminal event. `subscription`: made by the caller (execution_subscribe), so that nothing published
    from then on is missed; the log is read first unless `replay` is False (the default without a subscription:
    True; with one: False, for a subscription made before the run started)."""
    live = subscription or execution_subscribe(execution_id)
    if replay is None:
        replay = subscription is None
    try:
        last = after
        if replay:
            await live.ready()  # from here on, nothing published elsewhere is missed by both the log and the hub
            terminal = await _terminal_seq(execution_id)
            if terminal is not None and terminal <= after:
                return
            for envelope in await _persisted(execution_id, after=after):
                yield envelope
                last = envelope["seq"]
                if envelope["event"] in TERMINAL_EVENTS:
                    return
            if terminal is not None:  # finished, and its log (or what retention left of it) is out
                return
        while True:
            batch = await live.get(poll_s)
            if not batch:  # quiet: whatever the hub did not bring is in the database
                batch = await _persisted(execution_id, after=last)
                if not batch and await _terminal_seq(execution_id) == 0:
                    return  # ended with its log pruned
            for envelope in batch:
                seq = envelope["seq"]
                if seq is None:
                    yield envelope  # a token delta: live only
                    continue
                if seq <= last:
                    continue
                missed = await _persisted(execution_id, after=last, before=seq) if seq > last + 1 else []
                for item in [*missed, envelope]:
                    yield item
                    last = item["seq"]
                    if item["event"] in TERMINAL_EVENTS:
                        return
    finally:
        live.close()


async def feed_until_paused(feed: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """A run's feed for whoever started or answered it over a stream: it also ends once the run waits for input,
    after the question (`input_required`), so no connection is held while a person thinks; answering streams the
    rest (POST …/resume/). Watchers (GET …/events/, websockets) keep following the run across the pause."""
    try:
        async for envelope in feed:
            yield envelope
            if envelope["event"] == "input_required":
                return
    finally:
        await feed.aclose()


def user_subscribe(user_id) -> Subscription:
    return hub.subscribe([user_topic(user_id)])


async def user_feed(user_id, *, subscription: Subscription | None = None) -> AsyncIterator[dict]:
    """Everything published for one user's runs (tokens and conversation_updated included), until closed;
    `subscription`: made by the caller (user_subscribe), so that nothing published from then on is missed."""
    live = subscription or user_subscribe(user_id)
    try:
        await live.ready()
        while True:
            for envelope in await live.get(3600):
                yield envelope
    finally:
        live.close()


def access_subscribe(user_id) -> Subscription:
    """Listen for the end of a user's access (access_end_on_commit), from before their socket is accepted."""
    return hub.subscribe([access_topic(user_id)])


async def access_ended(subscription: Subscription, *, key: str | None, expires_at: datetime | None = None) -> None:
    """Return once the access a socket was opened with ends: its user deactivated, its API key (`key`: the key's
    uid; None for a session) revoked or deleted, or the key's expiry (`expires_at`) come. Told through the hub, so
    in every process at once; nothing is read from the database meanwhile."""
    try:
        while True:
            left = 3600.0 if expires_at is None else (expires_at - timezone.now()).total_seconds()
            if left <= 0:
                return
            for envelope in await subscription.get(min(left, 3600.0)):
                ended = envelope["data"].get("key")
                if ended is None or ended == key:
                    return
    finally:
        subscription.close()


def access_end_on_commit(*, user_id, key: str | None) -> None:
    """Close the user's sockets opened with `key` (None: all of them), once the change that ends their access
    commits: from then on a new connection is refused anyway (the key lookup, the user's is_active)."""
    transaction.on_commit(lambda: hub.announce(access_topic(user_id), "access_ended", {"key": key}))


def feed_blocking(feed: AsyncIterator[dict]) -> Iterator[dict]:
    """A feed read from sync code (the `chat` and `run_workflow` commands): the same feed, on a loop of its own."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(feed))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(feed.aclose())
        loop.close()
