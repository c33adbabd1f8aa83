"""Server-Sent Events responses (SPEC §6) over a feed of event envelopes (workflows.realtime's).

A DRF view validates and checks ownership first (errors are JSON), then returns `sse_response(feed)`;
Django serves its async iterator natively under ASGI.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request

EVENT_STREAM = "text/event-stream"


def wants_event_stream(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("Accept", "")


def sse_frame(envelope: dict) -> str:
    """One Server-Sent Events frame; token frames carry no id (they are not persisted)."""
    lines = [] if envelope["seq"] is None else [f"id: {envelope['seq']}"]
    lines += [f"event: {envelope['event']}", f"data: {json.dumps(envelope, separators=(',', ':'), default=str)}"]
    return "\n".join(lines) + "\n\n"


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
    try:
        async for envelope in feed:
            yield sse_frame(envelope)
    finally:
        await feed.aclose()  # a client that went away must not leave a subscription behind


def sse_response(feed: AsyncIterator[dict]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_frames(feed), content_type=EVENT_STREAM)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass frames through as they come
    return response
