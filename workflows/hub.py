"""The live half of the one event path, on Channels' channel layer (settings.CHANNEL_LAYERS: channels-redis's pub/sub
layer with REDIS_URL), through its public API only; without REDIS_URL, one process and only the local delivery.

A topic (a run's, a user's, a user's access) is a layer group. Publishing hands the events to this process's
subscribers at once and to the bus thread, which `group_send`s what it was handed within GATHER_S of a wake, one
message per topic, in order. Delivery is at most once; the feeds (workflows.realtime) fill any gap from the
database. How and why: docs/architecture.md#the-event-bus.
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Callable, Iterable

from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)
MESSAGE_TYPE = "chatter.events"
TERMINAL_EVENTS = ("workflow_completed", "workflow_failed", "workflow_cancelled")
FAILURE_LOG_INTERVAL_S = 10.0
RECONNECT_S = 1.0
LAYER_TIMEOUT_S = 0.5  # a layer call that takes longer counts as failed (Redis hangs)
OUTBOX_MOST = 10_000  # hand-offs waiting for the bus thread; past it (the layer hangs) new ones are dropped and counted
MESSAGE_MOST = 500  # envelopes in one layer message
# After a wake the bus gathers hand-offs this long before it sends: a run's events of one moment go as one message
# per topic, and a request's own events leave after its answer rather than beside it on the GIL. Watchers in other
# processes see them this much later (bench/RESULTS.md, B3); watchers here get them at once.
GATHER_S = 0.02


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
    BATCH_MOST = 100  # per read: a relay passes through its loop (which writes to its socket) at least this often

    def __init__(self, hub: "Hub", topics: list[str]):
        self.hub, self.topics = hub, topics
        self.made_at = datetime.now(timezone.utc)  # what is published from now on is its reader's
        self.listening: Future | None = None  # done once this process's channel is in every topic's group
        self.closed = False
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._delivered = threading.Condition(self._lock)  # for a thread that waits before the reader reads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_due = False

    def deliver(self, envelopes: list[dict]) -> None:
        """Any thread: add the events and wake the reader's loop, once per burst."""
        with self._lock:
            self._items.extend(envelopes[: max(0, self.BACKLOG - len(self._items))])
            self._delivered.notify_all()
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

    def wait_for(self, found: Callable[[dict], bool], timeout: float) -> dict | None:
        """A thread other than the reader's, before the reader reads: wait at most `timeout` s for the first event
        `found` accepts, and return it (None if none came). What was delivered stays for the reader."""
        deadline = time.monotonic() + timeout
        looked = 0
        with self._delivered:
            while True:
                for item in itertools.islice(self._items, looked, None):
                    if found(item):
                        return item
                looked = len(self._items)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self._delivered.wait(left)

    async def ready(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until events published in other processes reach this subscription: a feed that reads
        the database after this misses nothing in between. While the layer fails it gives up after `timeout` and
        the feed's reads of the database cover the rest."""
        if self.listening is not None and not self.listening.done():
            # asyncio.wait, not wait_for: a reader that gives up must not cancel the bus's future.
            await asyncio.wait([asyncio.wrap_future(self.listening)], timeout=timeout)

    async def get(self, timeout: float) -> list[dict]:
        """What was delivered since the last call (at most BATCH_MOST, oldest first), waiting up to `timeout` s for
        something; [] if nothing came."""
        if self._loop is None:
            with self._lock:
                self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        # Always through the loop once: a reader that always finds events would otherwise never let it run, and a
        # server's socket writes (the events it relays) wait for the loop.
        await asyncio.sleep(0)
        for attempt in (1, 2):
            with self._lock:
                if self._items:
                    return [self._items.popleft() for _ in range(min(len(self._items), self.BATCH_MOST))]
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
    """This process's subscribers by topic, and its bus (its member of the channel layer), started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, set[Subscription]] = {}
        self._bus: LayerBus | None = None

    def subscribe(self, topics: Iterable[str], *, remote: bool = True) -> Subscription:
        """Listen to topics here and, when `remote`, to what other processes publish on them too (not needed
        for a run this process runs itself: a streaming request, the `chat` command)."""
        subscription = Subscription(self, list(topics))
        bus = self.bus() if remote else None
        with self._lock:
            for topic in subscription.topics:
                self._topics.setdefault(topic, set()).add(subscription)
            if bus is not None:  # under the lock: joins and leaves reach the bus in order
                subscription.listening = bus.join(subscription.topics)
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
            if subscription.listening is not None and self._bus is not None:
                self._bus.leave(subscription.topics)

    def publish(self, envelopes: list[dict], *, owner_id, owner_only: list[dict] = (), watchable: bool = True) -> None:
        """Hand events (of one owner, in order) to every subscriber here and, through the layer, elsewhere: each to
        its run's topic and its owner's; `owner_only` ones (conversation_updated) after them, to the owner's. Not
        `watchable`: no other process can listen to the run's topic yet (a run whose row these events' write
        inserts: a watcher is let in by that row), so only its owner's goes through the layer."""
        by_topic: dict[str, list[dict]] = {}
        for envelope in envelopes:
            by_topic.setdefault(execution_topic(envelope["execution_id"]), []).append(envelope)
            by_topic.setdefault(user_topic(owner_id), []).append(envelope)
        if owner_only:
            by_topic.setdefault(user_topic(owner_id), []).extend(owner_only)
        self._send(by_topic, remote=None if watchable else (user_topic(owner_id),))

    def announce(self, topic: str, event: str, data: dict) -> None:
        """Hand one event that is no run's (access_ended) to a topic's subscribers, here and elsewhere."""
        self._send({topic: [{"event": event, "seq": 0, "data": data}]})

    def _send(self, by_topic: dict[str, list[dict]], *, remote: tuple[str, ...] | None = None) -> None:
        """Deliver here, and send through the layer (only the `remote` topics, when named)."""
        self.deliver(by_topic)
        bus = self.bus()
        if bus is not None:
            bus.send(by_topic if remote is None else {topic: by_topic[topic] for topic in remote if topic in by_topic})

    def deliver(self, by_topic: dict[str, list[dict]]) -> None:
        """Local delivery (also of what the layer brought). A run's topic ends with its terminal event: every
        reader of it ends there, so its subscribers are let go at once (none is left behind)."""
        for topic, envelopes in by_topic.items():
            with self._lock:
                subscribers = list(self._topics.get(topic, ()))
            for subscription in subscribers:
                subscription.deliver(envelopes)
            if topic.startswith("execution.") and any(e["event"] in TERMINAL_EVENTS for e in envelopes):
                for subscription in subscribers:
                    subscription.close()

    def bus(self) -> "LayerBus | None":
        # Without Redis there is one process, already served by local delivery; the in-memory layer would only
        # deep-copy every message back to it (bench/RESULTS.md, B4).
        if not settings.REDIS_URL:
            return None
        with self._lock:
            if self._bus is None:
                layer = get_channel_layer()
                if layer is None:
                    return None
                self._bus = LayerBus(layer, self)
            return self._bus

    def flush(self, timeout: float = LAYER_TIMEOUT_S * 2) -> bool:
        """Send what is handed to the bus, and make the layer's groups match the readers here, before going on
        (at exit: a command's last events reach watchers). False if `timeout` s passed first."""
        bus = self._bus
        return bus.flush(timeout) if bus is not None else True

    def stop(self) -> None:
        """Flush, leave every group and end the bus thread (a test's hub; a server's lives as long as it)."""
        with self._lock:
            bus, self._bus = self._bus, None
        if bus is not None:
            bus.stop()

    def after_fork(self) -> None:
        """A forked child owns none of its parent's subscribers or bus thread."""
        self._lock = threading.Lock()
        self._topics, self._bus = {}, None


class LayerBus:
    """One process's member of the channel layer: a thread with an event loop of its own (channels-redis keeps a
    layer per loop) that sends what publishing threads hand over and receives on the process's channel."""

    def __init__(self, layer, hub: Hub):
        self.layer, self.hub, self.origin = layer, hub, uuid.uuid4().hex
        self.channel: str | None = None
        self._paused_until = 0.0
        self._failures, self._failure_logged = 0, 0.0
        # Shared with publishing threads: the hand-offs, and whether the loop is busy with them or with groups.
        self._idle = threading.Condition(threading.Lock())
        self._outbox: list[dict[str, list[dict]]] = []
        self._wake_due = self._sending = self._syncing = False
        # Touched on the loop only.
        self._wake = asyncio.Event()
        self._watched: dict[str, int] = {}  # topic -> readers here
        self._joined: set[str] = set()  # groups the channel is in
        self._waiting: list[tuple[set[str], Future]] = []
        self._sync_task: asyncio.Task | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="chatter-events-bus", daemon=True)
        self._thread.start()
        self._tasks = [asyncio.run_coroutine_threadsafe(work(), self.loop) for work in (self._sender, self._receiver)]

    def _run_loop(self) -> None:
        self.loop.run_forever()
        self.loop.close()  # channels-redis closes its connections of this loop then

    def _call(self, callback, *args) -> bool:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # stopped
            return False
        return True

    # --- publishing: handed over by any thread, sent on the loop -------------------------------------------
    def send(self, by_topic: dict[str, list[dict]]) -> None:
        if time.monotonic() < self._paused_until:
            self._failed(len(by_topic), logged=False)
            return
        with self._idle:
            if len(self._outbox) >= OUTBOX_MOST:
                self._failed(len(by_topic))
                return
            self._outbox.append(by_topic)
            if self._wake_due:
                return
            self._wake_due = True
        self._call(self._wake.set)

    def flush(self, timeout: float) -> bool:
        """Wait until everything handed over so far is sent (or failed) and the groups match the readers here."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outbox or self._sending or self._syncing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_S)
            self._wake.clear()
            with self._idle:
                handed, self._outbox, self._wake_due = self._outbox, [], False
                self._sending = bool(handed)
            if not handed:
                continue
            try:
                await self._publish(handed)
            except Exception:  # noqa: BLE001 - whatever happens, the sender goes on (watchers catch up from the db)
                logger.exception("live events: a hand-off could not be sent")
            finally:
                with self._idle:
                    self._sending = False
                    self._idle.notify_all()

    async def _publish(self, handed: list[dict[str, list[dict]]]) -> None:
        """One message per topic (of at most MESSAGE_MOST events) for everything handed over, in order."""
        by_topic: dict[str, list[dict]] = {}
        for each in handed:
            for topic, envelopes in each.items():
                by_topic.setdefault(topic, []).extend(envelopes)
        for topic, envelopes in by_topic.items():
            for start in range(0, len(envelopes), MESSAGE_MOST):
                if time.monotonic() < self._paused_until:
                    self._failed(1, logged=False)
                    continue
                try:
                    await self._group_send(topic, envelopes[start:start + MESSAGE_MOST])
                except Exception as exc:  # noqa: BLE001 - the layer is down: watchers elsewhere catch up from the db
                    self._paused_until = time.monotonic() + RECONNECT_S
                    self._failed(1, exc)

    async def _group_send(self, topic: str, events: list[dict]) -> None:
        """One message; one refused at once (not a call past LAYER_TIMEOUT_S, which may have been sent) is sent once
        more, on a new connection: after Redis restarts, the first send on the process's pooled connection fails
        (the server closed it), and a message that is no run's (access_ended) has no log to be read back from."""
        message = {"type": MESSAGE_TYPE, "origin": self.origin, "topic": topic, "events": events}
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(LAYER_TIMEOUT_S):
                    await self.layer.group_send(topic, message)
                return
            except TimeoutError:
                raise
            except Exception:  # noqa: BLE001 - the connection failed: the layer's pool opens a new one
                if attempt == 2:
                    raise

    def _failed(self, count: int, exc: Exception | None = None, *, logged: bool = True) -> None:
        """Count what was not sent; say so at most every FAILURE_LOG_INTERVAL_S: a layer that is slow (a call past
        LAYER_TIMEOUT_S) or unreachable by its kind, anything else with its traceback."""
        self._failures += count
        now = time.monotonic()
        if logged and now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:
            self._failure_logged = now
            expected = isinstance(exc, (TimeoutError, OSError))  # (a refused connection is an OSError)
            why = (f"a call took longer than {LAYER_TIMEOUT_S} s" if isinstance(exc, TimeoutError)
                   else f"{type(exc).__name__}: {exc}" if exc is not None else "unknown")
            logger.warning("live events over the channel layer are failing (%d messages not sent since the last "
                           "report; %s); watchers catch up from the database", self._failures, why,
                           exc_info=exc is not None and not expected)
            self._failures = 0

    # --- receiving, and the channel's groups: on the loop ---------------------------------------------------
    async def _receiver(self) -> None:
        while True:
            try:
                if self.channel is None:
                    self.channel = await self.layer.new_channel()
                    self._sync_soon()
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the layer is down: try again once it may be back
                self._failed(0, exc)
                await asyncio.sleep(RECONNECT_S)
                continue
            if message.get("type") == MESSAGE_TYPE and message.get("origin") != self.origin:
                self.hub.deliver({message["topic"]: message["events"]})

    def join(self, topics: list[str]) -> Future:
        """Any thread: put the channel in `topics`' groups; the future is done once it is in all of them."""
        done: Future = Future()
        self._busy_with_groups()
        if not self._call(self._join, topics, done):
            done.set_result(False)
        return done

    def leave(self, topics: list[str]) -> None:
        self._busy_with_groups()
        self._call(self._leave, topics)

    def _busy_with_groups(self) -> None:
        with self._idle:
            self._syncing = True

    def _join(self, topics: list[str], done: Future) -> None:
        for topic in topics:
            self._watched[topic] = self._watched.get(topic, 0) + 1
        self._waiting.append((set(topics), done))
        self._sync_soon()

    def _leave(self, topics: list[str]) -> None:
        for topic in topics:
            left = self._watched.get(topic, 0) - 1
            if left > 0:
                self._watched[topic] = left
            else:
                self._watched.pop(topic, None)
        self._sync_soon()

    def _sync_soon(self) -> None:
        self._settle_waiting()
        if self._sync_task is None:
            if self.channel is not None and set(self._watched) != self._joined:
                self._sync_task = self.loop.create_task(self._sync())
            else:
                self._idle_if_settled()

    def _settle_waiting(self) -> None:
        """Tell joiners whose topics are all joined (True), or no longer all watched: their reader left (False)."""
        still = []
        for topics, done in self._waiting:
            if topics <= self._joined or not topics <= self._watched.keys():
                if not done.done():
                    done.set_result(topics <= self._joined)
            else:
                still.append((topics, done))
        self._waiting = still

    def _idle_if_settled(self) -> None:
        if self._sync_task is None and self._watched.keys() == self._joined:
            with self._idle:
                self._syncing = False
                self._idle.notify_all()

    async def _sync(self) -> None:
        """Make the channel's groups match what is watched here, one group_add / group_discard at a time."""
        retry = False
        try:
            while True:
                wanted = set(self._watched)
                add, drop = wanted - self._joined, self._joined - wanted
                if not add and not drop:
                    return
                for topic in sorted(add):
                    async with asyncio.timeout(LAYER_TIMEOUT_S):
                        await self.layer.group_add(topic, self.channel)
                    self._joined.add(topic)
                    self._settle_waiting()
                for topic in sorted(drop):
                    self._joined.discard(topic)
                    async with asyncio.timeout(LAYER_TIMEOUT_S):
                        await self.layer.group_discard(topic, self.channel)
        except Exception:  # noqa: BLE001 - the layer is down: try again once it may be back
            self._failed(0)
            retry = True
        finally:
            self._sync_task = None
            if retry:
                self.loop.call_later(RECONNECT_S, self._sync_soon)
            else:
                self._idle_if_settled()

    # --- the end (of a test's hub; a server's bus lives as long as the process) --------------------------------
    def stop(self) -> None:
        self.flush(LAYER_TIMEOUT_S * 2)
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(LAYER_TIMEOUT_S * 4)
        except Exception:  # noqa: BLE001 - stopping a bus whose layer hangs: the thread is a daemon
            logger.warning("live events: the bus did not stop cleanly", exc_info=True)
        self._thread.join(LAYER_TIMEOUT_S * 4)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.channel is not None:
            for topic in list(self._joined):
                try:
                    await self.layer.group_discard(topic, self.channel)
                except Exception:  # noqa: BLE001
                    pass
        self.loop.call_soon(self.loop.stop)


hub = Hub()
os.register_at_fork(after_in_child=hub.after_fork)
atexit.register(hub.flush)
