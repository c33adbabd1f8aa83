"""The feeds every reader of run events uses (docs/api/rest.md#following-runs-live): the SSE of a streaming POST and
of `GET …/events/`, both websockets and the `chat` command read the same `execution_feed` / `user_feed`.

A run's feed is its persisted log from the database and then the live events from the hub, in seq order, without
gaps or duplicates: an event that the hub did not bring (the channel layer down, a full buffer) is read back from
the database when the next one shows the gap, or when the feed has been quiet. A user's feed does the same for each
of the user's runs since it opened, looking at the user's runs every few seconds for one it heard nothing of.

A read the database cannot answer (it is down, or restarting) is tried again at the feed's next look, live events
relayed meanwhile; a feed whose reads have failed for CHATTER_FEED_DB_WAIT_S ends with Unavailable (_Reads).
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import AsyncIterator, Iterator

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from conversations.models import Conversation
from core.errors import Unavailable
from keys.services import access_live
from workflows.events import TERMINAL_EVENTS, conversation_updated_data, event_envelope
from workflows.hub import Subscription, access_topic, execution_topic, hub, user_topic
from workflows.models import ExecutionEvent, WorkflowExecution

POLL_S = 1.0
USER_POLL_S = 2.0  # how often a user's feed looks for what the hub did not bring
RUN_VISIBLE_S = 10.0  # a run's row is visible (its start committed) this soon after its created_at, at most
ENDED_KEPT_S = 60.0  # how long a user's feed remembers a run it saw end (a late live copy of its events is dropped)
ACCESS_CHECK_S = 2.0  # how often an open socket's key and user are read again (access_ended)
NOT_READ = object()  # what _Reads.read returns for a read the database could not answer

logger = logging.getLogger(__name__)


class _Reads:
    """A feed's reads of the database: one the database cannot answer (down, restarting: OperationalError after the
    pool's timeout) is NOT_READ, for the feed to try again at its next look, one warning logged per outage; once its
    reads have failed for CHATTER_FEED_DB_WAIT_S, Unavailable ends the feed (its stream says so and closes)."""

    def __init__(self, what, *, unread: str = "the events cannot be read") -> None:
        self.what = what  # for the log: the feed (of a run, of a user) or the access check
        self.unread = unread  # what Unavailable says could not be done
        self.failing_since: float | None = None

    async def read(self, read, *args, **kwargs):
        try:
            result = await read(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            now = time.monotonic()
            if self.failing_since is None:
                self.failing_since = now
                logger.warning("%s cannot read the database; it tries again", self.what, exc_info=True)
            elif now - self.failing_since >= settings.CHATTER_FEED_DB_WAIT_S:
                raise Unavailable(f"{self.unread}: the database has been out of reach for "
                                  f"{int(now - self.failing_since)} s; follow the run again later") from exc
            return NOT_READ
        if self.failing_since is not None:
            logger.info("%s reads the database again", self.what)
            self.failing_since = None
        return result


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
def _persisted(execution_id, *, after: int, before: int | None = None, since: datetime | None = None) -> list[dict]:
    rows = ExecutionEvent.objects.filter(execution_id=execution_id, seq__gt=after)
    if before is not None:
        rows = rows.filter(seq__lt=before)
    if since is not None:  # a user's feed: the events since it opened
        rows = rows.filter(created_at__gte=since)
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
    reads = _Reads(f"the feed of execution {execution_id}")
    try:
        last = after
        if replay:
            await live.ready()  # from here on, nothing published elsewhere is missed by both the log and the hub
            while (terminal := await reads.read(_terminal_seq, execution_id)) is NOT_READ or \
                    (replayed := await reads.read(_persisted, execution_id, after=after)) is NOT_READ:
                await asyncio.sleep(poll_s)
            if terminal is not None and terminal <= after:
                return
            for envelope in replayed:
                yield envelope
                last = envelope["seq"]
                if envelope["event"] in TERMINAL_EVENTS:
                    return
            if terminal is not None:  # finished, and its log (or what retention left of it) is out
                return
        while True:
            batch = await live.get(poll_s)
            if not batch:  # quiet: whatever the hub did not bring is in the database
                batch = await reads.read(_persisted, execution_id, after=last)
                if batch is NOT_READ:
                    continue  # read again at the next quiet look
                if not batch and (terminal := await reads.read(_terminal_seq, execution_id)) is not NOT_READ \
                        and terminal is not None and terminal <= last:
                    return  # ended at or before `after` (asked to resume past its end), or its log pruned (0)
            for envelope in batch:
                seq = envelope["seq"]
                if seq is None:
                    yield envelope  # a token delta: live only
                    continue
                if seq <= last:
                    if envelope["event"] in TERMINAL_EVENTS:
                        return  # it ended at or before `after`: nothing after it will come
                    continue
                missed = await reads.read(_persisted, execution_id, after=last, before=seq) if seq > last + 1 else []
                if missed is NOT_READ:
                    continue  # (persisted: read back with what it missed at the next quiet look)
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


async def user_feed(user_id, *, subscription: Subscription | None = None,
                    poll_s: float = USER_POLL_S) -> AsyncIterator[dict]:
    """Everything published for one user's runs (tokens and conversation_updated included), until closed;
    `subscription`: made by the caller (user_subscribe), so that nothing published from then on is missed. Each
    run's persisted events since the feed opened come once each and in order: what the hub did not bring is read
    back from the database when a later event shows the gap, or by the look at the user's runs every `poll_s`.
    While the database is out of reach, live events are relayed and each look is made again at the next (_Reads)."""
    live = subscription or user_subscribe(user_id)
    log = _UserLog(user_id, opened=live.made_at)
    try:
        await live.ready()
        next_look = time.monotonic() + poll_s
        while True:
            for envelope in await live.get(max(0.0, next_look - time.monotonic())):
                for item in await log.relayed(envelope):
                    yield item
            if time.monotonic() >= next_look:
                for item in await log.missed():
                    yield item
                next_look = time.monotonic() + poll_s
    finally:
        live.close()


class _UserLog:
    """What a user's feed relayed of each run's persisted log since it opened, to put back what the hub lost."""

    def __init__(self, user_id, *, opened: datetime):
        self.user_id = user_id
        self.opened = opened  # its subscription's making, not the feed's first read: a run may start in between
        self.window = self.opened - timedelta(seconds=RUN_VISIBLE_S)
        self.last: dict[str, int] = {}  # a run's last seq relayed
        self.watched: set[str] = set()  # runs not ended at the last look
        self.ended: dict[str, float] = {}  # runs whose terminal event was relayed (when), to drop late copies
        self.reads = _Reads(f"the feed of user {user_id}")

    async def relayed(self, envelope: dict) -> list[dict]:
        """A live envelope as the feed relays it: with the persisted events it skipped before it, or nothing if it
        was relayed already, or if those could not be read (the next look reads them back, with it)."""
        seq, run = envelope["seq"], envelope.get("execution_id")
        if seq is None or run is None:
            return [envelope]  # live only (a token delta, conversation_updated)
        last = self.last.get(run, 0)
        if run in self.ended or seq <= last:
            return []
        missed = await self.reads.read(_persisted, run, after=last, before=seq, since=self.opened) \
            if seq > last + 1 else []
        if missed is NOT_READ:
            return []
        return self._relay([*missed, envelope])

    async def missed(self) -> list[dict]:
        """The persisted events of the user's runs the hub did not bring (then each run's conversation_updated).
        Every read is made before anything is marked relayed: a look the database cannot answer is made again
        whole at the next one."""
        look = timezone.now()
        runs = await self.reads.read(_user_runs, self.user_id, since=self.window, watched=self.watched)
        if runs is NOT_READ:
            return []
        now = time.monotonic()
        ended = {run: when for run, when in self.ended.items() if now - when < ENDED_KEPT_S}
        runs = [(run, status, conversation) for run, status, conversation in runs if run not in ended]
        reads = []
        for run, status, conversation in runs:
            persisted = await self.reads.read(_persisted, run, after=self.last.get(run, 0), since=self.opened)
            updated = []
            if persisted is not NOT_READ and persisted and persisted[-1]["event"] in TERMINAL_EVENTS \
                    and conversation is not None:
                updated = await self.reads.read(_conversation_updated, run, conversation)
            if persisted is NOT_READ or updated is NOT_READ:
                return []
            reads.append((run, status, persisted, updated))
        self.window, self.ended = look - timedelta(seconds=RUN_VISIBLE_S), ended
        self.watched = {run for run, status, _ in runs if status not in WorkflowExecution.TERMINAL}
        out = []
        for run, status, persisted, updated in reads:
            out += self._relay(persisted) + updated
            if status in WorkflowExecution.TERMINAL:  # its terminal event committed with its status: all read
                self._ended(run)
        return out

    def _relay(self, envelopes: list[dict]) -> list[dict]:
        for envelope in envelopes:
            self.last[envelope["execution_id"]] = envelope["seq"]
            if envelope["event"] in TERMINAL_EVENTS:
                self._ended(envelope["execution_id"])
        return envelopes

    def _ended(self, run: str) -> None:
        self.last.pop(run, None)
        self.watched.discard(run)
        self.ended.setdefault(run, time.monotonic())


@database_sync_to_async
def _user_runs(user_id, *, since: datetime, watched: set[str]) -> list[tuple[str, str, str | None]]:
    """The user's runs that may have events the feed has not relayed: those under way (the index of a user's runs
    in progress), those not ended at the last look (a paused one too), and those made since (which may have ended in
    between)."""
    Status = WorkflowExecution.Status
    rows = WorkflowExecution.objects.filter(owner_id=user_id).filter(
        Q(status__in=(Status.PENDING, Status.RUNNING)) | Q(created_at__gte=since) | Q(pk__in=watched))
    return [(str(pk), status, conversation and str(conversation))
            for pk, status, conversation in rows.values_list("pk", "status", "conversation_id")]


@database_sync_to_async
def _conversation_updated(execution_id: str, conversation_id: str) -> list[dict]:
    """The conversation's totals as they are now; none if it was deleted since the run was read."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return []
    return [event_envelope(execution_id=execution_id, event="conversation_updated",
                           data=conversation_updated_data(conversation), seq=None)]


def access_subscribe(user_id) -> Subscription:
    """Listen for the end of a user's access (access_end_on_commit), from before their socket is accepted."""
    return hub.subscribe([access_topic(user_id)])


def session_mark(session_key: str | None) -> str | None:
    """What names a login session on the access topic: a digest of its key, never the key itself."""
    return salted_hmac("chatter.access_ended", session_key).hexdigest() if session_key else None


async def access_ended(subscription: Subscription, *, user_id, key: str | None, session: str | None = None,
                       expires_at: datetime | None = None) -> None:
    """Return once the access a socket was opened with ends: its user deactivated, its API key (`key`: the key's
    uid; None for a session) revoked or deleted, its login session (`session`: its session_mark) logged out, or the
    key's expiry (`expires_at`) come. Told through the hub, so
    in every process at once; and, as a message on the hub can be lost (Redis down, or just back with the
    process's connection to it dead), the key and the user are read again every ACCESS_CHECK_S through the memo of
    hot reads (keys.services.access_live: a statement only after keys or users changed, in any process). A read the
    database cannot answer is made again at the next check, the access kept meanwhile, as a feed's reads are
    (_Reads): Unavailable once they have failed for CHATTER_FEED_DB_WAIT_S."""
    reads = _Reads(f"the access check of user {user_id}'s socket", unread="the socket's access cannot be checked")
    try:
        next_check = time.monotonic() + ACCESS_CHECK_S
        while True:
            left = next_check - time.monotonic()
            if expires_at is not None:
                left = min(left, (expires_at - timezone.now()).total_seconds())
                if left <= 0:
                    return
            for envelope in await subscription.get(max(0.0, left)):
                ended_key, ended_session = envelope["data"].get("key"), envelope["data"].get("session")
                if ended_session is not None:
                    if ended_session == session:
                        return
                elif ended_key is None or ended_key == key:
                    return
            if time.monotonic() >= next_check:
                if await reads.read(database_sync_to_async(access_live), user_id=user_id, key_uid=key) is False:
                    return
                next_check = time.monotonic() + ACCESS_CHECK_S
    finally:
        subscription.close()


def access_end_on_commit(*, user_id, key: str | None, session: str | None = None) -> None:
    """Close the user's sockets opened with `key`, or with the login session `session` (its session_mark); neither:
    all of them; once the change that ends their access commits: from then on a new connection is refused anyway
    (the key lookup, the user's is_active, the session gone)."""
    transaction.on_commit(lambda: hub.announce(access_topic(user_id), "access_ended",
                                               {"key": key, "session": session}))


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
