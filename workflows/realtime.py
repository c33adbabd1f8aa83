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
from collections import deque
from typing import AsyncIterator

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer

from workflows import events
from workflows.models import ExecutionEvent

logger = logging.getLogger(__name__)
MESSAGE_TYPE = "chatter.event"
POLL_S = 1.0


def execution_group(execution_id) -> str:
    return f"execution.{execution_id}"


def user_group(user_id) -> str:
    return f"user.{user_id}"


class Broadcaster:
    """Ordered, fire-and-forget group sends from any thread.

    Messages go through one queue drained by one task, on the event loop where this process's listeners
    live (the ASGI server's loop, once a consumer or streaming view has bound it) or else on a private
    loop thread (commands, workers: only a shared layer such as Redis has listeners for them).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._private = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver from `loop` from now on (called on the loop itself by in-process listeners).

        Only the in-memory layer needs this (its queues belong to one loop). A cross-process layer
        (Redis) keeps the private loop, which outlives any server or test loop."""
        if not isinstance(get_channel_layer(), InMemoryChannelLayer):
            return
        with self._lock:
            if self._loop is loop and not loop.is_closed():
                return
            self._start(loop, private=False)

    def _start(self, loop: asyncio.AbstractEventLoop, *, private: bool) -> None:
        self._loop, self._private = loop, private
        self._queue = None
        ready = threading.Event()

        def begin() -> None:
            self._queue = asyncio.Queue()
            loop.create_task(self._drain(self._queue))
            ready.set()

        if private:
            loop.call_soon_threadsafe(begin)
            ready.wait(5)
        else:
            begin()  # bind() runs on the loop itself

    def _ensure(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue]:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="chatter-broadcast", daemon=True).start()
                self._start(loop, private=True)
                atexit.register(self.flush)
            return self._loop, self._queue

    def send(self, groups: list[str], envelope: dict) -> None:
        try:
            loop, queue = self._ensure()
            loop.call_soon_threadsafe(queue.put_nowait, (groups, envelope))
        except Exception:  # noqa: BLE001 - a broken layer must never break a run
            logger.exception("could not queue a broadcast")

    async def _drain(self, queue: asyncio.Queue) -> None:
        layer = get_channel_layer()
        while True:
            groups, envelope = await queue.get()
            for group in groups:
                try:
                    await layer.group_send(group, {"type": MESSAGE_TYPE, "event": envelope})
                except Exception:  # noqa: BLE001 - e.g. Redis down: persisted events are replayed from the db
                    logger.warning("broadcast to %s failed", group, exc_info=True)
            queue.task_done()

    def flush(self, timeout: float = 3.0) -> None:
        """Wait until queued broadcasts are sent (a command about to exit)."""
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or not self._private or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(queue.join(), loop).result(timeout)
        except Exception:  # noqa: BLE001
            logger.warning("some broadcasts were not sent before exit")


broadcaster = Broadcaster()


def broadcast(envelope: dict, *, owner_id) -> None:
    """Send an event to the watchers of its run and of its owner (call after commit)."""
    broadcaster.send([execution_group(envelope["execution_id"]), user_group(owner_id)], envelope)


# --- feeds --------------------------------------------------------------------------------------------------
@database_sync_to_async
def _terminal_seq(execution_id) -> int | None:
    row = ExecutionEvent.objects.filter(execution_id=execution_id, event__in=events.TERMINAL_EVENTS).first()
    return row.seq if row is not None else None


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

    def __init__(self, groups: list[str]):
        self.groups = groups
        self.queue: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> "_Subscription":
        broadcaster.bind(asyncio.get_running_loop())
        self.layer = get_channel_layer()
        self.channel = await self.layer.new_channel()
        for group in self.groups:
            await self.layer.group_add(group, self.channel)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            if message.get("type") == MESSAGE_TYPE:
                self.queue.put_nowait(message["event"])

    async def get(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def __aexit__(self, *exc) -> None:
        self.reader.cancel()
        for group in self.groups:
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception:  # noqa: BLE001
                pass


async def execution_feed(execution_id, *, after: int = 0, poll_s: float = POLL_S) -> AsyncIterator[dict]:
    """Every event of one run with seq > after, in order, without gaps or duplicates, live tokens included;
    ends after the terminal event."""
    terminal = await _terminal_seq(execution_id)
    if terminal is not None and terminal <= after:
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


def execution_run_streamed(execution_id) -> AsyncIterator[dict]:
    """Start a pending execution in a worker thread now, and return an async iterator of its events as they
    happen. If nobody reads them, or the reader goes away, the run goes on and is recorded in full."""
    from workflows.services import execution_run_in_thread

    relay = _Relay()
    execution_run_in_thread(execution_id=execution_id, sink=relay.put, on_done=relay.close)
    return relay.__aiter__()
