"""B2's floor: Chatter's HTTP stack around the model alone, to tell the stack's share of B2 from the run path's.

`POST /floor/chat/ {"message"}` passes through what `POST /api/v1/chat/` passes through before the run — daphne,
Django's handler and middleware (Chatter's settings and ASGI application), DRF with Chatter's authentication,
permissions, run throttle and parser — and then streams the local model's answer as SSE `token` frames, the model
run on a thread of its own and its chunks handed to the event loop, as a run's tokens are. It writes nothing and
runs no graph. Served by its own daphne on the same database (bench.b2_sse_first_token's `floor` side):

    DJANGO_SETTINGS_MODULE=bench.b2_floor_settings daphne chatter_project.asgi:application
"""
from __future__ import annotations

import asyncio
import json
import threading

from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import include, path
from rest_framework.views import APIView

from bench.chatter_calls import local_model
from core.api.sse import EVENT_STREAM, EventStreamNegotiation
from core.api.throttling import RunThrottle


def _model_stream(message: str, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    from langchain_core.messages import HumanMessage

    try:
        for chunk in local_model(settings.CHATTER_LOCAL_TOKEN_DELAY_MS).stream([HumanMessage(message)]):
            if chunk.content:
                frame = f"event: token\ndata: {json.dumps({'text': chunk.content})}\n\n"
                loop.call_soon_threadsafe(queue.put_nowait, frame)
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def _frames(message: str):
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    threading.Thread(target=_model_stream, args=(message, loop, queue), daemon=True).start()
    while (frame := await queue.get()) is not None:
        yield frame


class FloorChatView(APIView):
    throttle_classes = (RunThrottle,)
    throttle_scope = "runs"
    key_scope = "chat"
    content_negotiation_class = EventStreamNegotiation

    def post(self, request):
        return StreamingHttpResponse(_frames(str(request.data["message"])), content_type=EVENT_STREAM)


urlpatterns = [path("floor/chat/", FloorChatView.as_view()), path("", include("chatter_project.urls"))]
