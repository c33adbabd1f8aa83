"""The one Server-Sent Events writer of every surface: its frames (`id:`, `event:`, `data:` as compact JSON), its
heartbeat comment, and the streaming response that carries them. /api/v1/ writes its event envelopes
(docs/api/rest.md#following-runs-live: the event's name, its seq as the id); /langgraph/ its stream modes
(agent_server.stream: `<seq>-<k>` ids that Last-Event-ID resumes from) and its thread protocol's events
(agent_server.protocol); /v1/ OpenAI's `data:` chunks (gateway.views).

A DRF view validates and checks ownership first (errors are JSON), then returns `event_stream_response(frames)`;
Django serves its async iterator natively under ASGI: no thread is held while the stream waits for its feed.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

from core.errors import ChatterError

EVENT_STREAM = "text/event-stream"
HEARTBEAT = ": heartbeat\r\n\r\n"  # a comment line: keeps proxies from closing a quiet stream, ignored by clients


def wants_event_stream(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("Accept", "")


def frame(data, *, event: str | None = None, frame_id: str | int | None = None) -> str:
    """One frame: its id (none for what cannot be resumed from), its event name, its data as compact JSON."""
    lines = [] if frame_id is None else [f"id: {frame_id}"]
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'), default=str)}")
    return "\n".join(lines) + "\n\n"


def sse_frame(envelope: dict) -> str:
    """An event envelope of /api/v1/ (docs/api/rest.md#events); token frames carry no id (they are not persisted)."""
    return frame(envelope, event=envelope["event"], frame_id=envelope["seq"])


class EventStreamNegotiation(DefaultContentNegotiation):
    """For views that stream SSE themselves: `Accept: text/event-stream` is not a renderer's media type, so
    anything they answer before the stream starts (errors included) is rendered as JSON instead of a 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            if not wants_event_stream(request):
                raise
            return renderers[0], renderers[0].media_type


async def _frames(feed: AsyncIterator[dict]) -> AsyncIterator[str]:
    """A feed's frames; a feed that ends on an error of Chatter's (the database out of reach for too long:
    workflows.realtime) ends the stream with an `error` frame in /api/v1/'s error shape, not a connection left open."""
    try:
        async for envelope in feed:
            yield sse_frame(envelope)
    except ChatterError as exc:
        yield frame(exc.as_dict(), event="error")
    finally:
        await feed.aclose()  # a client that went away must not leave a subscription behind


def event_stream_response(frames: AsyncIterator[str], *, cache_control: str = "no-cache",
                          headers: dict | None = None) -> StreamingHttpResponse:
    """The response of every stream: its frames as they come."""
    response = StreamingHttpResponse(frames, content_type=EVENT_STREAM, headers=headers)
    response["Cache-Control"] = cache_control
    response["X-Accel-Buffering"] = "no"  # nginx: pass frames through as they come
    return response


def sse_response(feed: AsyncIterator[dict]) -> StreamingHttpResponse:
    """/api/v1/'s stream of a run's feed of event envelopes."""
    return event_stream_response(_frames(feed))
