"""The thread protocol's websocket (`/langgraph/threads/<id>/stream/events`, the SDK's `transport="websocket"`): the
client's first frame subscribes (`subscription.subscribe`, the filter an SSE stream takes in its body); the server
answers it, then sends the thread's events (agent_server.protocol) as text frames, as the SSE stream does, until the
client leaves or its access ends. Commands go over HTTP (`POST …/commands`), as the SDK sends them."""
from __future__ import annotations

import asyncio
import json
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from pydantic import ValidationError

from agent_server.bodies import EventStreamFilter
from agent_server.protocol import thread_events, thread_stream_check
from core.errors import NotFound
from workflows.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED, FeedConsumer, socket_access_ended
from workflows.realtime import access_subscribe


class ThreadEventsConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = None  # its events come from the thread's log, not a layer group
    relay_task: asyncio.Task | None = None
    access_task: asyncio.Task | None = None
    access = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return await FeedConsumer.refuse(self, CLOSE_UNAUTHENTICATED)
        try:
            self.thread_id = str(uuid.UUID(self.scope["url_route"]["kwargs"]["thread_id"]))
        except ValueError:
            return await FeedConsumer.refuse(self, CLOSE_NOT_FOUND)
        try:
            await database_sync_to_async(thread_stream_check)(owner=user, thread_id=self.thread_id)
        except NotFound:
            return await FeedConsumer.refuse(self, CLOSE_NOT_FOUND)
        self.access = access_subscribe(user.pk)
        await self.accept()
        self.access_task = asyncio.create_task(self.close_when_access_ends())

    async def close_when_access_ends(self) -> None:
        await socket_access_ended(self.scope, self.access)
        if self.relay_task is not None:
            self.relay_task.cancel()
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        try:
            command = json.loads(text_data or "")
        except ValueError:
            return await self._error(None, "invalid_argument", "a frame is one JSON command")
        if not isinstance(command, dict) or command.get("method") != "subscription.subscribe":
            return await self._error(command.get("id") if isinstance(command, dict) else None, "unknown_command",
                                     "over the websocket: subscription.subscribe (commands go over HTTP)")
        if self.relay_task is not None:
            return await self._error(command.get("id"), "invalid_argument", "this socket is subscribed already")
        try:
            wanted = EventStreamFilter.model_validate(command.get("params") or {})
        except ValidationError as exc:
            return await self._error(command.get("id"), "invalid_argument", str(exc.errors()[0]["msg"]))
        await self.send(text_data=json.dumps({"type": "success", "id": command.get("id"), "result": {
            "subscription_id": str(uuid.uuid4()), "replayed_events": 0}}))
        self.relay_task = asyncio.create_task(self.relay(wanted))

    async def relay(self, wanted: EventStreamFilter) -> None:
        events = thread_events(owner=self.scope["user"], thread_id=self.thread_id, channels=wanted.channels,
                               namespaces=wanted.namespaces, depth=wanted.depth, since=wanted.since)
        try:
            async for event in events:
                if event is not None:  # (the socket's own pings keep it alive: no heartbeat frames)
                    await self.send(text_data=json.dumps(event, separators=(",", ":"), default=str))
        finally:
            await events.aclose()

    async def _error(self, command_id, code: str, message: str) -> None:
        await self.send(text_data=json.dumps({"type": "error", "id": command_id, "error": code, "message": message}))

    async def disconnect(self, code) -> None:
        for task in (self.relay_task, self.access_task):
            if task is not None:
                task.cancel()
        if self.access is not None:
            self.access.close()
