"""Live delivery of run events (SPEC §6): group names, the broadcaster used from sync code, and the feeds
websocket consumers and SSE responses read from.

Delivery never slows a run: `broadcast` only queues the message for a background task. Persisted events
are also read back from the database, so a feed has no gaps even when the channel layer drops messages
(a full channel, Redis down, a run in a process with no shared layer): replay, then live with gap-filling,
then a database poll when the layer is quiet.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import Executor
from typing import AsyncIterator

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer

from workflows import events
from workflows.models import ExecutionEvent, WorkflowExecution

logger = logging.getLogger(__name__)
MESSAGE_TYPE = "chatter.event"
POLL_S = 1.0
# While the layer is down (Redis stopped), sends fail or hang: each gets this long, the backlog is capped
# (the oldest go first: persisted events come back from the database, token deltas are best-effort), and
# failures are logged at most once per interval.
SEND_TIMEOUT_S = 2.0
MAX_BACKLOG = 10_000
FAILURE_LOG_INTERVAL_S = 10.0


def execution_group(execution_id) -> str:
    return f"execution.{execution_id}"


def user_group(user_id) -> str:
    return f"user.{user_id}"


class _Target:
    """One event loop broadcasts are sent from, with its own ordered backlog."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, private: bool):
        self.loop, self.private = loop, private
        self.pending: deque = deque(maxlen=MAX_BACKLOG)  # touched only on `loop`
        self.draining = False
        # Messages handed over from other threads, and whether the loop has yet to take them: one wake-up of
        # the loop carries everything handed over until it runs (a streamed reply's tokens come in bursts).
        self.inbox: deque = deque(maxlen=MAX_BACKLOG)
        self.inbox_lock = threading.Lock()
        self.wake_pending = False


class Broadcaster:
    """Ordered, fire-and-forget group sends from any thread.

    Messages are queued on the event loop where this process's listeners live (the ASGI server's loop, once
    a consumer or streaming view has bound it) or else on a private loop thread (commands, workers: only a
    shared layer such as Redis has listeners for them), and sent by a task that exists only while there is
    a backlog.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: _Target | None = None
        self._failures = 0
        self._failure_logged = 0.0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver from `loop` from now on (called on the loop itself by in-process listeners).

        Only the in-memory layer needs this (its queues belong to one loop). A cross-process layer
        (Redis) keeps the private loop, which outlives any server or test loop."""
        if not isinstance(get_channel_layer(), InMemoryChannelLayer):
            return
        with self._lock:
            if self._target is None or self._target.loop is not loop:
                self._target = _Target(loop, private=False)

    def _current(self) -> _Target:
        with self._lock:
            if self._target is None or self._target.loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="chatter-broadcast", daemon=True).start()
                self._target = _Target(loop, private=True)
                atexit.register(self.flush)
            return self._target

    def send_many(self, messages: list[tuple[list[str], dict]]) -> None:
        """Queue (groups, envelope) messages, in order; the sending loop is woken only if it is not already
        due to take what was queued before."""
        try:
            target = self._current()
            with target.inbox_lock:
                target.inbox.extend(messages)
                if target.wake_pending:
                    return
                target.wake_pending = True
            target.loop.call_soon_threadsafe(self._enqueue, target)
        except Exception:  # noqa: BLE001 - a broken layer must never break a run
            logger.exception("could not queue a broadcast")

    def _enqueue(self, target: _Target) -> None:
        with target.inbox_lock:
            target.pending.extend(target.inbox)
            target.inbox.clear()
            target.wake_pending = False
        if not target.draining:
            target.draining = True
            target.loop.create_task(self._drain(target))

    async def _drain(self, target: _Target) -> None:
        layer = get_channel_layer()
        try:
            while target.pending:
                if isinstance(layer, RedisPubSubChannelLayer):
                    batch = [target.pending.popleft() for _ in range(len(target.pending))]
                    await self._publish_pipelined(layer, batch)
                    continue
                groups, envelope = target.pending.popleft()
                for group in groups:
                    try:
                        async with asyncio.timeout(SEND_TIMEOUT_S):  # no extra task per send, unlike wait_for
                            await layer.group_send(group, {"type": MESSAGE_TYPE, "event": envelope})
                    except Exception:  # noqa: BLE001 - e.g. Redis down: persisted events are replayed from the db
                        self._send_failed(group)
        finally:
            target.draining = False

    async def _publish_pipelined(self, layer: RedisPubSubChannelLayer, batch: list[tuple[list[str], dict]]) -> None:
        """What group_send does for each (group, message) of the batch, in order, in one pipelined round trip per
        Redis shard: a PUBLISH each costs the publishing loop most of its CPU (B5)."""
        loop_layer = layer._get_layer()
        by_shard: dict = {}
        for groups, envelope in batch:
            payload = layer.serialize({"type": MESSAGE_TYPE, "event": envelope})
            for group in groups:
                channel = loop_layer._get_group_channel_name(group)
                by_shard.setdefault(loop_layer._get_shard(channel), []).append((group, channel, payload))
        for shard, publishes in by_shard.items():
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S), shard._lock:
                    shard._ensure_redis()
                    pipeline = shard._redis.pipeline(transaction=False)
                    for _, channel, payload in publishes:
                        pipeline.publish(channel, payload)
                    await pipeline.execute()
            except Exception:  # noqa: BLE001 - e.g. Redis down: persisted events are replayed from the db
                self._send_failed(publishes[-1][0], count=len(publishes))

    def _send_failed(self, group: str, count: int = 1) -> None:
        self._failures += count
        now = time.monotonic()
        if now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged = now
            logger.warning("broadcasts are failing (%d since the last report; last to %s); watchers catch up "
                           "from the database", self._failures, group, exc_info=True)
            self._failures = 0

    def flush(self, timeout: float = 3.0) -> None:
        """Wait until queued broadcasts are sent (a command about to exit)."""
        target = self._target
        if target is None or not target.private or target.loop.is_closed():
            return

        async def idle() -> None:
            while target.draining or target.pending or target.wake_pending:
                await asyncio.sleep(0.005)

        try:
            asyncio.run_coroutine_threadsafe(idle(), target.loop).result(timeout)
        except Exception:  # noqa: BLE001
            logger.warning("some broadcasts were not sent before exit")


broadcaster = Broadcaster()


def broadcast(envelope: dict, *, owner_id) -> None:
    """Send an event to the watchers of its run and of its owner (call after commit)."""
    broadcast_many([envelope], owner_id=owner_id)


def broadcast_many(envelopes: list[dict], *, owner_id) -> None:
    """`broadcast` for events committed together: handed to the broadcaster at once, in order."""
    broadcaster.send_many([([execution_group(envelope["execution_id"]), user_group(owner_id)], envelope)
                           for envelope in envelopes])


# --- feeds --------------------------------------------------------------------------------------------------
@database_sync_to_async
def _terminal_seq(execution_id) -> int | None:
    """The seq of the run's terminal event; 0 for a finished run whose log was pruned; None while it runs."""
    row = ExecutionEvent.objects.filter(execution_id=execution_id, event__in=events.TERMINAL_EVENTS).first()
    if row is not None:
        return row.seq
    finished = WorkflowExecution.objects.filter(pk=execution_id, status__in=WorkflowExecution.TERMINAL).exists()
    return 0 if finished else None


@database_sync_to_async
def _persisted(execution_id, *, after: int, before: int | None = None) -> list[dict]:
    rows = ExecutionEvent.objects.filter(execution_id=execution_id, seq__gt=after)
    if before is not None:
        rows = rows.filter(seq__lt=before)
    return [
        events.event_envelope(execution_id=execution_id, event=row.event, data=row.data, seq=row.seq, ts=row.created_at)
        for row in rows.order_by("seq")
    ]


class _Subscription:
    """A channel subscribed to groups, read by a background task into a local queue (so waiting with a
    timeout never cancels a layer receive)."""

    BACKLOG = 2000

    def __init__(self, groups: list[str]):
        self.groups = groups
        # Bounded: a client slower than its runs loses token deltas, never memory; a dropped persisted event
        # comes back from the database through the feed's gap-filling.
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=self.BACKLOG)

    async def __aenter__(self) -> "_Subscription":
        broadcaster.bind(asyncio.get_running_loop())
        self.layer = get_channel_layer()
        self.reader = None
        try:
            self.channel = await asyncio.wait_for(self.layer.new_channel(), SEND_TIMEOUT_S)
            for group in self.groups:
                await asyncio.wait_for(self.layer.group_add(group, self.channel), SEND_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - layer down: nothing live, the feeds poll the database instead
            logger.warning("could not subscribe to %s; polling the database only", self.groups, exc_info=True)
            self.groups = []
            return self
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            if message.get("type") == MESSAGE_TYPE:
                try:
                    self.queue.put_nowait(message["event"])
                except asyncio.QueueFull:
                    pass

    async def get(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def __aexit__(self, *exc) -> None:
        if self.reader is not None:
            self.reader.cancel()
        for group in self.groups:
            try:
                await asyncio.wait_for(self.layer.group_discard(group, self.channel), SEND_TIMEOUT_S)
            except Exception:  # noqa: BLE001
                pass


async def execution_feed(execution_id, *, after: int = 0, poll_s: float = POLL_S) -> AsyncIterator[dict]:
    """Every event of one run with seq > after, in order, without gaps or duplicates, live tokens included;
    ends after the terminal event."""
    terminal = await _terminal_seq(execution_id)
    if terminal is not None and terminal <= after:
        return
    if terminal is not None:  # a finished run: its whole log is in the database, nothing live to wait for
        for envelope in await _persisted(execution_id, after=after):
            yield envelope
        return
    async with _Subscription([execution_group(execution_id)]) as live:
        last = after
        for envelope in await _persisted(execution_id, after=last):
            yield envelope
            last = envelope["seq"]
            if envelope["event"] in events.TERMINAL_EVENTS:
                return
        while True:
            envelope = await live.get(poll_s)
            if envelope is None:
                missed = await _persisted(execution_id, after=last)
            elif envelope["seq"] is None:
                yield envelope
                continue
            elif envelope["seq"] <= last:
                continue
            else:
                missed = [*await _persisted(execution_id, after=last, before=envelope["seq"]), envelope]
            for item in missed:
                yield item
                last = item["seq"]
                if item["event"] in events.TERMINAL_EVENTS:
                    return


async def user_feed(user_id) -> AsyncIterator[dict]:
    """Everything broadcast for one user's runs (including tokens and conversation_updated), until closed."""
    async with _Subscription([user_group(user_id)]) as live:
        while True:
            envelope = await live.get(3600)
            if envelope is not None:
                yield envelope


def sse_frame(envelope: dict) -> str:
    """One Server-Sent Events frame; token frames carry no id (they are not persisted)."""
    lines = [] if envelope["seq"] is None else [f"id: {envelope['seq']}"]
    lines += [f"event: {envelope['event']}", f"data: {json.dumps(envelope, separators=(',', ':'), default=str)}"]
    return "\n".join(lines) + "\n\n"


class _Relay:
    """Hands events from the run's thread to whichever event loop reads them, without blocking the run."""

    _DONE = object()

    def __init__(self) -> None:
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def put(self, item) -> None:
        with self._lock:
            self._items.append(item)
            loop, wake = self._loop, self._wake
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def close(self) -> None:
        self.put(self._DONE)

    async def __aiter__(self) -> AsyncIterator[dict]:
        with self._lock:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        broadcaster.bind(self._loop)
        while True:
            with self._lock:
                item = self._items.popleft() if self._items else None
                if item is None:
                    self._wake.clear()
            if item is None:
                await self._wake.wait()
            elif item is self._DONE:
                return
            else:
                yield item


def execution_run_streamed(execution_id, *, thread: Executor | None = None) -> AsyncIterator[dict]:
    """Start a pending execution in another thread now (`thread`, e.g. the request's own, or a new one), and
    return an async iterator of its events as they happen. If nobody reads them, or the reader goes away, the
    run goes on and is recorded in full."""
    from workflows.services.runs import execution_run_in_thread

    relay = _Relay()
    execution_run_in_thread(execution_id=execution_id, sink=relay.put, on_done=relay.close, executor=thread)
    return relay.__aiter__()
