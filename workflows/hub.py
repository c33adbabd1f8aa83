"""The live half of the one event path (SPEC §6): a process-local hub that hands every published event to this
process's subscribers at once, and, with REDIS_URL, a bridge that carries events between processes over Redis
pub/sub (redis-py, under our own channel names).

Publishing never blocks a run: local subscribers get the events in their own buffer (their event loop is woken
once per burst), and the bridge's thread sends everything queued in one pipelined round trip. Delivery is at
most once; persisted events are also in the database, and the feeds (workflows.realtime) fill any gap from it.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from typing import Iterable

from django.conf import settings

logger = logging.getLogger(__name__)
CHANNEL_PREFIX = "chatter:events:"
TERMINAL_EVENTS = ("workflow_completed", "workflow_failed", "workflow_cancelled")
FAILURE_LOG_INTERVAL_S = 10.0
RECONNECT_S = 1.0


def execution_topic(execution_id) -> str:
    return f"execution.{execution_id}"


def user_topic(user_id) -> str:
    return f"user.{user_id}"


class Subscription:
    """The events of some topics, handed over from any thread and read on one event loop. Events that arrive
    before a reader is there wait in the buffer; past BACKLOG the newest are dropped (a reader slower than its runs
    loses token deltas; a persisted event it lost comes back from the database)."""

    BACKLOG = 2000

    def __init__(self, hub: "Hub", topics: list[str]):
        self.hub, self.topics = hub, topics
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_due = False

    def deliver(self, envelopes: list[dict]) -> None:
        """Any thread: add the events and wake the reader's loop, once per burst."""
        with self._lock:
            self._items.extend(envelopes[: max(0, self.BACKLOG - len(self._items))])
            if self._loop is None or self._wake_due:
                return
            self._wake_due = True
            loop = self._loop
        try:
            loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:  # the reader's loop is closed: nobody reads any more
            pass

    def _set_wake(self) -> None:
        with self._lock:
            self._wake_due = False
        self._wake.set()

    async def get(self, timeout: float) -> list[dict]:
        """Everything delivered since the last call, waiting up to `timeout` s for something; [] if nothing came."""
        if self._loop is None:
            with self._lock:
                self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        for attempt in (1, 2):
            with self._lock:
                if self._items:
                    batch = list(self._items)
                    self._items.clear()
                    return batch
                self._wake.clear()
            if attempt == 2:
                return []
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
        return []

    def close(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, set[Subscription]] = {}
        self._bridge: RedisBridge | None = None
        self._bridge_url: str | None = None

    def subscribe(self, topics: Iterable[str]) -> Subscription:
        subscription = Subscription(self, list(topics))
        with self._lock:
            for topic in subscription.topics:
                self._topics.setdefault(topic, set()).add(subscription)
        self.bridge()  # listening from now on
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            for topic in subscription.topics:
                subscribers = self._topics.get(topic)
                if subscribers is not None:
                    subscribers.discard(subscription)
                    if not subscribers:
                        del self._topics[topic]

    def publish(self, envelopes: list[dict], *, owner_id, owner_only: list[dict] = ()) -> None:
        """Hand events (of one owner, in order) to every subscriber here and, through the bridge, elsewhere: each to
        its run's topic and its owner's; `owner_only` ones (conversation_updated) after them, to the owner's."""
        by_topic: dict[str, list[dict]] = {}
        for envelope in envelopes:
            by_topic.setdefault(execution_topic(envelope["execution_id"]), []).append(envelope)
            by_topic.setdefault(user_topic(owner_id), []).append(envelope)
        if owner_only:
            by_topic.setdefault(user_topic(owner_id), []).extend(owner_only)
        self.deliver(by_topic)
        bridge = self.bridge()
        if bridge is not None:
            bridge.send(by_topic)

    def deliver(self, by_topic: dict[str, list[dict]]) -> None:
        """Local delivery (also of what the bridge received). A run's topic ends with its terminal event."""
        for topic, envelopes in by_topic.items():
            with self._lock:
                subscribers = list(self._topics.get(topic, ()))
                if topic.startswith("execution.") and any(e["event"] in TERMINAL_EVENTS for e in envelopes):
                    self._topics.pop(topic, None)  # every reader of it ends here (and none is left behind)
            for subscription in subscribers:
                subscription.deliver(envelopes)

    def bridge(self) -> "RedisBridge | None":
        url = settings.REDIS_URL
        if not url:
            return None
        with self._lock:
            if self._bridge is None or self._bridge_url != url:  # tests point REDIS_URL elsewhere
                if self._bridge is not None:
                    self._bridge.stop()
                self._bridge, self._bridge_url = RedisBridge(url, self), url
            return self._bridge

    async def ready(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until events from other processes reach this one: a feed that reads the database after
        this misses nothing in between."""
        bridge = self.bridge()
        if bridge is not None and not bridge.listening.done():
            # asyncio.wait, not wait_for: a reader that gives up must not cancel the bridge's own future.
            await asyncio.wait([asyncio.wrap_future(bridge.listening)], timeout=timeout)

    def after_fork(self) -> None:
        """A forked child owns none of its parent's subscribers or bridge thread."""
        self._lock = threading.Lock()
        self._topics, self._bridge, self._bridge_url = {}, None, None

    def flush(self, timeout: float = 3.0) -> None:
        """Wait until what this process published has left (a command about to exit)."""
        if self._bridge is not None:
            self._bridge.flush(timeout)


class RedisBridge:
    """One thread with an event loop of its own: it sends everything queued in one pipelined round trip, and
    listens (one pattern subscription) for what other processes publish. Events this process published come back
    from Redis too; they are recognised by their origin and dropped."""

    def __init__(self, url: str, hub: Hub):
        import redis.asyncio as redis

        self.hub, self.origin = hub, uuid.uuid4().hex
        self.client = redis.Redis.from_url(url)
        self.listening: Future = Future()
        self._outbox: deque = deque()
        self._outbox_lock = threading.Lock()
        self._wake_due = False
        self._draining = False
        self._failures, self._failure_logged = 0, 0.0
        self._idle = threading.Event()
        self._idle.set()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="chatter-events-bridge", daemon=True).start()
        self._reader = asyncio.run_coroutine_threadsafe(self._listen(), self.loop)

    def send(self, by_topic: dict[str, list[dict]]) -> None:
        payloads = [(CHANNEL_PREFIX + topic, json.dumps({"o": self.origin, "t": topic, "e": envelopes},
                                                        separators=(",", ":"), default=str))
                    for topic, envelopes in by_topic.items()]
        with self._outbox_lock:
            self._outbox.extend(payloads)
            self._idle.clear()
            if self._wake_due:
                return
            self._wake_due = True
        try:
            self.loop.call_soon_threadsafe(self._drain_start)
        except RuntimeError:
            pass

    def _drain_start(self) -> None:
        if not self._draining:  # one sender at a time: events leave in the order they were handed over
            self._draining = True
            self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                with self._outbox_lock:
                    batch = list(self._outbox)
                    self._outbox.clear()
                    self._wake_due = False
                    if not batch:
                        self._idle.set()
                        return
                try:
                    async with asyncio.timeout(2.0):
                        pipeline = self.client.pipeline(transaction=False)
                        for channel, payload in batch:
                            pipeline.publish(channel, payload)
                        await pipeline.execute()
                except Exception:  # noqa: BLE001 - Redis down: watchers elsewhere catch up from the database
                    self._failed(len(batch))
        finally:
            self._draining = False

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                if not self.listening.done():
                    self.listening.set_result(True)
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    body = json.loads(message["data"])
                    if body["o"] != self.origin:
                        self.hub.deliver({body["t"]: body["e"]})
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis down or restarted: listen again once it is back
                self._failed(0)
                await asyncio.sleep(RECONNECT_S)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001
                    pass

    def _failed(self, count: int) -> None:
        self._failures += count
        now = time.monotonic()
        if now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged = now
            logger.warning("live events over Redis are failing (%d not sent since the last report); watchers catch "
                           "up from the database", self._failures, exc_info=True)
            self._failures = 0

    def flush(self, timeout: float) -> None:
        if not self._idle.wait(timeout):
            logger.warning("some live events were not sent before exit")

    def stop(self) -> None:
        self._reader.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)


hub = Hub()
os.register_at_fork(after_in_child=hub.after_fork)
atexit.register(hub.flush)  # a command that ran a run lets its last events leave before it exits
