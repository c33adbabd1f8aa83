"""The live half of the one event path (SPEC §6): a process-local hub that hands every published event to this
process's subscribers at once, and, with REDIS_URL, a bridge that carries events between processes over Redis
pub/sub (redis-py, under our own channel names).

Publishing hands the events to the bridge's sender thread, which PUBLISHes everything handed to it meanwhile, in
order, in one pipelined round trip: a run never waits on Redis (at exit, what is queued is sent). A process
listens on Redis only to the topics its readers watch (a run's, a user's), so a server nobody watches receives
nothing. Delivery is at most once; persisted events are also in the database, and the feeds (workflows.realtime)
fill any gap from it. Token deltas are not sent to a topic that had no listener anywhere within the last
AUDIENCE_S (a reader that starts watching a running run may miss up to that much of its tokens, never a
persisted event). While Redis is unreachable, publishing is skipped for RECONNECT_S after each failure.
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
PUBLISH_TIMEOUT_S = 0.5
AUDIENCE_S = 1.0  # how long "nobody listens to this topic" holds for token deltas
AUDIENCE_TOPICS = 10_000
OUTBOX_MOST = 10_000  # hand-offs waiting for the sender; past it (Redis hangs) new ones are dropped and counted


def execution_topic(execution_id) -> str:
    return f"execution.{execution_id}"


def user_topic(user_id) -> str:
    return f"user.{user_id}"


def access_topic(user_id) -> str:
    """Where the end of a user's access is told (a key revoked, the user deactivated): their sockets close."""
    return f"access.{user_id}"


class Subscription:
    """The events of some topics, handed over from any thread and read on one event loop. Events that arrive
    before a reader is there wait in the buffer; past BACKLOG the newest are dropped (a reader slower than its runs
    loses token deltas; a persisted event it lost comes back from the database)."""

    BACKLOG = 2000

    def __init__(self, hub: "Hub", topics: list[str]):
        self.hub, self.topics = hub, topics
        self.listening: Future | None = None  # done once Redis brings this process these topics' events
        self.closed = False
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

    async def ready(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until events published in other processes reach this subscription: a feed that reads
        the database after this misses nothing in between. Without Redis (or while it is down) it gives up after
        `timeout` and the feed's reads of the database cover the rest."""
        if self.listening is not None and not self.listening.done():
            # asyncio.wait, not wait_for: a reader that gives up must not cancel the bridge's future.
            await asyncio.wait([asyncio.wrap_future(self.listening)], timeout=timeout)

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

    def subscribe(self, topics: Iterable[str], *, remote: bool = True) -> Subscription:
        """Listen to topics here and, when `remote`, to what other processes publish on them too (not needed
        for a run this process runs itself: a streaming request, the `chat` command)."""
        subscription = Subscription(self, list(topics))
        bridge = self.bridge() if remote else None
        with self._lock:
            for topic in subscription.topics:
                self._topics.setdefault(topic, set()).add(subscription)
            if bridge is not None:  # under the lock: watches and unwatches reach the bridge in order
                subscription.listening = bridge.watch(subscription.topics)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription.closed:
                return
            subscription.closed = True
            for topic in subscription.topics:
                subscribers = self._topics.get(topic)
                if subscribers is not None:
                    subscribers.discard(subscription)
                    if not subscribers:
                        del self._topics[topic]
            if subscription.listening is not None and self._bridge is not None:
                self._bridge.unwatch(subscription.topics)

    def publish(self, envelopes: list[dict], *, owner_id, owner_only: list[dict] = ()) -> None:
        """Hand events (of one owner, in order) to every subscriber here and, through the bridge, elsewhere: each to
        its run's topic and its owner's; `owner_only` ones (conversation_updated) after them, to the owner's."""
        by_topic: dict[str, list[dict]] = {}
        for envelope in envelopes:
            by_topic.setdefault(execution_topic(envelope["execution_id"]), []).append(envelope)
            by_topic.setdefault(user_topic(owner_id), []).append(envelope)
        if owner_only:
            by_topic.setdefault(user_topic(owner_id), []).extend(owner_only)
        self._send(by_topic)

    def announce(self, topic: str, event: str, data: dict) -> None:
        """Hand one event that is no run's (access_ended) to a topic's subscribers, here and elsewhere. Its seq is
        not None: never skipped as a token delta may be when the topic had no listener a moment ago."""
        self._send({topic: [{"event": event, "seq": 0, "data": data}]})

    def _send(self, by_topic: dict[str, list[dict]]) -> None:
        self.deliver(by_topic)
        bridge = self.bridge()
        if bridge is not None:
            bridge.send(by_topic)

    def deliver(self, by_topic: dict[str, list[dict]]) -> None:
        """Local delivery (also of what the bridge received). A run's topic ends with its terminal event: every
        reader of it ends there, so its subscribers are let go at once (none is left behind)."""
        for topic, envelopes in by_topic.items():
            with self._lock:
                subscribers = list(self._topics.get(topic, ()))
            for subscription in subscribers:
                subscription.deliver(envelopes)
            if topic.startswith("execution.") and any(e["event"] in TERMINAL_EVENTS for e in envelopes):
                for subscription in subscribers:
                    subscription.close()

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

    def flush(self, timeout: float = PUBLISH_TIMEOUT_S * 2) -> None:
        """Send what is handed to the bridge before going on (at exit: a command's last events reach watchers)."""
        if self._bridge is not None:
            self._bridge.flush(timeout)

    def after_fork(self) -> None:
        """A forked child owns none of its parent's subscribers or bridge thread."""
        self._lock = threading.Lock()
        self._topics, self._bridge, self._bridge_url = {}, None, None


class RedisBridge:
    """Sends from the publishing thread (one pipelined round trip per hand-off) and listens on a thread with an
    event loop of its own, subscribed to this process's own channel (so it always has a subscription) and to each
    topic a reader here watches, from its first reader to its last. Events this process published that come back
    (a topic watched both here and elsewhere) are recognised by their origin and dropped."""

    def __init__(self, url: str, hub: Hub):
        import redis
        import redis.asyncio

        self.hub, self.origin = hub, uuid.uuid4().hex
        self._errors = (redis.RedisError, OSError)
        self.publisher = redis.Redis.from_url(url, socket_connect_timeout=PUBLISH_TIMEOUT_S,
                                              socket_timeout=PUBLISH_TIMEOUT_S)
        self._paused_until = 0.0
        self._unheard_since: dict[str, float] = {}  # topic -> when a PUBLISH on it last reached no listener
        self._failures, self._failure_logged = 0, 0.0
        # The sender's queue: hand-offs (events by topic), and whether a round trip is under way.
        lock = threading.Lock()
        self._queued, self._sent = threading.Condition(lock), threading.Condition(lock)
        self._outbox: list[dict[str, list[dict]]] = []
        self._sending = self._stopped = False
        threading.Thread(target=self._sender, name="chatter-events-sender", daemon=True).start()
        # The listener's state, touched on its loop only.
        self._listener = redis.asyncio.Redis.from_url(url)
        self._pubsub = None
        self._watched: dict[str, int] = {}  # channel -> readers here
        self._subscribed: set[str] = set()  # asked of Redis
        self._confirmed: set[str] = set()  # confirmed by Redis: its events reach us
        self._waiting: dict[str, list[Future]] = {}
        self._syncing = False
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="chatter-events-bridge", daemon=True).start()
        self._reader = asyncio.run_coroutine_threadsafe(self._listen(), self.loop)

    # --- publishing: handed over by the caller's thread, sent by the sender's ----------------------------------
    def send(self, by_topic: dict[str, list[dict]]) -> None:
        now = time.monotonic()
        if now < self._paused_until:
            self._failed(len(by_topic), logged=False)
            return
        # Live-only events (token deltas) skip a topic that nobody anywhere listened to a moment ago: PUBLISH
        # answers how many listeners got it. Persisted events always go (and learn the audience anew, once
        # Redis answers).
        topics = {topic: envelopes for topic, envelopes in by_topic.items() if not (
            self._unheard_since.get(topic, -AUDIENCE_S) > now - AUDIENCE_S
            and all(e["seq"] is None for e in envelopes))}
        if not topics:
            return
        with self._queued:
            if len(self._outbox) >= OUTBOX_MOST:
                self._failed(len(topics))
                return
            self._outbox.append(topics)
            self._queued.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over so far is sent (or failed); False if `timeout` s passed first."""
        deadline = time.monotonic() + timeout
        with self._sent:
            while self._outbox or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._sent.wait(left)
        return True

    def _sender(self) -> None:
        while True:
            with self._queued:
                while not self._outbox and not self._stopped:
                    self._queued.wait()
                if not self._outbox:  # stopped, and everything handed over was sent
                    return
                handed, self._outbox, self._sending = self._outbox, [], True
            try:
                self._publish([(topic, envelopes) for by_topic in handed for topic, envelopes in by_topic.items()])
            except Exception:  # noqa: BLE001 - whatever happens, the sender goes on (watchers catch up from the db)
                logger.exception("live events: a hand-off could not be sent")
            finally:
                with self._sent:
                    self._sending = False
                    self._sent.notify_all()

    def _publish(self, items: list[tuple[str, list[dict]]]) -> None:
        """PUBLISH each (topic, events) in order, in one pipelined round trip."""
        try:
            with self.publisher.pipeline(transaction=False) as pipeline:
                for topic, envelopes in items:
                    pipeline.publish(CHANNEL_PREFIX + topic, json.dumps(
                        {"o": self.origin, "t": topic, "e": envelopes}, separators=(",", ":"), default=str))
                heard = pipeline.execute()
        except self._errors:  # Redis down: watchers elsewhere catch up from the database
            self._paused_until = time.monotonic() + RECONNECT_S
            self._failed(len(items))
            return
        now = time.monotonic()
        if len(self._unheard_since) > AUDIENCE_TOPICS:
            self._unheard_since.clear()
        for (topic, envelopes), listeners in zip(items, heard):
            if listeners or any(e["event"] in TERMINAL_EVENTS for e in envelopes):
                self._unheard_since.pop(topic, None)
            else:
                self._unheard_since[topic] = now

    def _failed(self, count: int, *, logged: bool = True) -> None:
        self._failures += count
        now = time.monotonic()
        if logged and now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged = now
            logger.warning("live events over Redis are failing (%d hand-offs not sent since the last report); "
                           "watchers catch up from the database", self._failures, exc_info=True)
            self._failures = 0

    # --- listening: on the bridge's loop -------------------------------------------------------------------
    def watch(self, topics: list[str]) -> Future:
        """Any thread: listen to `topics`; the future is done once Redis confirmed every one of them."""
        done: Future = Future()
        self.loop.call_soon_threadsafe(self._watch, [CHANNEL_PREFIX + t for t in topics], done)
        return done

    def unwatch(self, topics: list[str]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._unwatch, [CHANNEL_PREFIX + t for t in topics])
        except RuntimeError:  # stopped
            pass

    def _watch(self, channels: list[str], done: Future) -> None:
        for channel in channels:
            self._watched[channel] = self._watched.get(channel, 0) + 1
        pending = [c for c in channels if c not in self._confirmed]
        if not pending:
            done.set_result(True)
            return
        counter = {"left": len(pending)}

        def confirmed(_: Future) -> None:
            counter["left"] -= 1
            if counter["left"] == 0 and not done.done():
                done.set_result(True)

        for channel in pending:
            each: Future = Future()
            each.add_done_callback(confirmed)
            self._waiting.setdefault(channel, []).append(each)
        self._sync_soon()

    def _unwatch(self, channels: list[str]) -> None:
        for channel in channels:
            left = self._watched.get(channel, 0) - 1
            if left > 0:
                self._watched[channel] = left
            else:
                self._watched.pop(channel, None)
        self._sync_soon()

    def _sync_soon(self) -> None:
        if not self._syncing and self._pubsub is not None:
            self._syncing = True
            self.loop.create_task(self._sync())

    async def _sync(self) -> None:
        """Make Redis's subscriptions match what is watched here, one SUBSCRIBE / UNSUBSCRIBE at a time."""
        try:
            while self._pubsub is not None:
                wanted = set(self._watched)
                add, drop = wanted - self._subscribed, self._subscribed - wanted
                if not add and not drop:
                    return
                self._subscribed = wanted
                if add:
                    await self._pubsub.subscribe(*add)
                if drop:
                    await self._pubsub.unsubscribe(*drop)
                    self._confirmed -= drop
        except Exception:  # noqa: BLE001 - the connection broke: _listen reconnects and subscribes again
            self._failed(0)
        finally:
            self._syncing = False

    async def _listen(self) -> None:
        own = CHANNEL_PREFIX + "process." + self.origin
        while True:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.subscribe(own)  # always subscribed: listen() runs while a subscription exists
                self._pubsub, self._subscribed, self._confirmed = pubsub, set(), set()
                self._sync_soon()
                async for message in pubsub.listen():
                    kind = message.get("type")
                    channel = message["channel"].decode()
                    if kind == "subscribe":
                        self._confirmed.add(channel)
                        for each in self._waiting.pop(channel, ()):
                            each.set_result(True)
                    elif kind == "message":
                        body = json.loads(message["data"])
                        if body["o"] != self.origin:
                            self.hub.deliver({body["t"]: body["e"]})
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis down or restarted: listen again once it is back
                self._pubsub = None
                self._failed(0)
                await asyncio.sleep(RECONNECT_S)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001
                    pass

    def stop(self) -> None:
        self.flush(PUBLISH_TIMEOUT_S * 2)
        with self._queued:
            self._stopped = True
            self._queued.notify()
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        self.publisher.close()

    async def _stop(self) -> None:
        self._reader.cancel()
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)
        self.loop.stop()


hub = Hub()
os.register_at_fork(after_in_child=hub.after_fork)
atexit.register(hub.flush)
