"""Websocket consumers (docs/api/rest.md#following-runs-live): thin — check the user and ownership on connect, then
relay a feed."""
from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer

from audit.services import access_denied_record
from core.errors import Unavailable
from workflows.api.serializers import EventsQuerySerializer
from workflows.hub import Subscription
from workflows.realtime import (
    access_ended,
    access_subscribe,
    execution_feed,
    execution_subscribe,
    session_mark,
    user_feed,
    user_subscribe,
)
from workflows.selectors import execution_get

CLOSE_NORMAL = 1000
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
# The feed ended Unavailable (the database out of reach for too long): try again later, as HTTP's 503 (daphne sends
# no close code but 1000 and 3000-4999, so not the protocol's 1013).
CLOSE_UNAVAILABLE = 4503


async def socket_access_ended(scope, subscription: Subscription) -> None:
    """Return once the access a socket's handshake had ends (workflows.realtime.access_ended): its user's, and its
    API key's (TokenAuthMiddleware) or else its login session's."""
    key, session = scope.get("api_key"), scope.get("session")
    await access_ended(subscription, user_id=scope["user"].pk, key=key, expires_at=scope.get("api_key_expires_at"),
                       session=None if key is not None or session is None else session_mark(session.session_key))


class FeedConsumer(AsyncJsonWebsocketConsumer):
    """Relays one async feed of envelopes to the client; closes when the feed ends. The feed listens from before
    the handshake completes: a client that connects, then starts a run, misses none of its live tokens."""

    feed_task: asyncio.Task | None = None
    subscription: Subscription | None = None
    access: Subscription | None = None
    access_task: asyncio.Task | None = None
    # The feeds subscribe to their groups themselves; a per-consumer layer channel would only make every
    # handshake depend on Redis being up (a client could not even get the persisted log during an outage).
    channel_layer_alias = None

    async def start(self, subscription: Subscription, feed) -> None:
        """Accept the handshake and relay `feed`, whose `subscription` was made before (closed on disconnect), until
        the socket's access ends. The socket opens once what other processes publish reaches the subscription
        (Subscription.ready): a client that sees it open misses none of their live events (tokens) from then on."""
        self.subscription = subscription
        await subscription.ready()
        self.access = access_subscribe(self.scope["user"].pk)
        await self.accept()
        self.feed_task = asyncio.create_task(self.relay(feed))
        self.access_task = asyncio.create_task(self.close_when_access_ends())

    async def close_when_access_ends(self) -> None:
        """Its API key revoked or expired (scope["api_key"]: TokenAuthMiddleware), its session logged out or its
        user deactivated: the socket stops relaying and closes as unauthenticated. Its access that could not be read
        again for CHATTER_FEED_DB_WAIT_S (the database out of reach): it stops relaying and closes as a feed that
        cannot read the database does (relay)."""
        unread = None
        try:
            await socket_access_ended(self.scope, self.access)
        except Unavailable as exc:
            unread = exc
        if self.feed_task is not None:
            self.feed_task.cancel()
        await (self.close(code=CLOSE_UNAUTHENTICATED) if unread is None else self.close_unavailable(unread))

    async def relay(self, feed) -> None:
        """Relay `feed` to its end, then close; a feed that ends Unavailable (its reads of the database failing for
        CHATTER_FEED_DB_WAIT_S: workflows.realtime) sends it in /api/v1/'s error shape and closes 4503
        (try again later), not a socket left open that says nothing more."""
        try:
            async for envelope in feed:
                await self.send_json(envelope)
        except Unavailable as exc:
            await self.close_unavailable(exc)
            return
        finally:
            await feed.aclose()
        await self.close(code=CLOSE_NORMAL)

    async def close_unavailable(self, exc: Unavailable) -> None:
        """The error in /api/v1/'s error shape, then closed 4503 (try again later)."""
        await self.send_json(exc.as_dict())
        await self.close(code=CLOSE_UNAVAILABLE)

    async def refuse(self, code: int) -> None:
        if code in (CLOSE_UNAUTHENTICATED, CLOSE_NOT_FOUND):
            await database_sync_to_async(access_denied_record)(
                user=self.scope.get("user"), ip=(self.scope.get("client") or [None])[0], method="WEBSOCKET",
                path=self.scope.get("path", ""), status=code)
        # Accept first: a close before the handshake completes reaches the client as HTTP 403, not a code.
        await self.accept()
        await self.close(code=code)

    async def receive_json(self, content, **kwargs) -> None:
        pass  # these sockets are one-way; anything a client sends is ignored

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        pass  # ignore garbage frames too (never decode them)

    async def disconnect(self, code) -> None:
        if self.feed_task is not None:
            self.feed_task.cancel()
        if self.access_task is not None:
            self.access_task.cancel()
        for subscription in (self.subscription, self.access):  # (closed by their readers too, if they started)
            if subscription is not None:
                subscription.close()


class ExecutionEventsConsumer(FeedConsumer):
    """/ws/executions/<id>/?after=<seq>: replay of persisted events after `after`, then live."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.refuse(CLOSE_UNAUTHENTICATED)
        execution = await database_sync_to_async(execution_get)(
            user=user, execution_id=self.scope["url_route"]["kwargs"]["execution_id"])
        if execution is None:
            return await self.refuse(CLOSE_NOT_FOUND)
        after = parse_qs(self.scope.get("query_string", b"").decode()).get("after", ["0"])[0]
        query = EventsQuerySerializer(data={"after": after})  # read as GET …/events/ reads it
        if not query.is_valid():
            return await self.refuse(CLOSE_BAD_REQUEST)
        subscription = execution_subscribe(execution.pk)
        await self.start(subscription, execution_feed(execution.pk, after=query.validated_data["after"],
                                                      subscription=subscription, replay=True))


class UserEventsConsumer(FeedConsumer):
    """/ws/events/: every event of the user's runs, plus conversation_updated."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await self.refuse(CLOSE_UNAUTHENTICATED)
        subscription = user_subscribe(user.pk)
        await self.start(subscription, user_feed(user.pk, subscription=subscription))


class NoRouteConsumer(AsyncWebsocketConsumer):
    """A handshake to a path no socket serves (a typo, `/ws/events` without its slash, a scanner): closed 4404, as a
    socket that is not found, before anything is read. The last route of the project's router (chatter_project.asgi):
    without it Channels' URLRouter raised, an HTTP 500 and a traceback in the log."""

    async def connect(self) -> None:
        # Accept first: a close before the handshake completes reaches the client as HTTP 403, not a code.
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
