"""Correlation ids: every answer carries `X-Request-ID`, the same on every surface (/api/v1/, /langgraph/, /v1/,
whatever view or error answered): the client's own when it sent a usable one (so its logs and ours name the
request alike), else a new one. The request knows it as `request.correlation_id`."""
from __future__ import annotations

import re
import secrets

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest
from django.utils.decorators import sync_and_async_middleware

HEADER = "X-Request-ID"
_USABLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # what a correlation_id column holds (64), nothing a log could trip on


def correlation_id_of(request: HttpRequest) -> str:
    sent = request.headers.get(HEADER, "")
    return sent if sent and _USABLE.fullmatch(sent) else secrets.token_hex(16)


@sync_and_async_middleware
def correlation_id_middleware(get_response):
    if iscoroutinefunction(get_response):
        async def middleware(request: HttpRequest):
            request.correlation_id = correlation_id_of(request)
            response = await get_response(request)
            response[HEADER] = request.correlation_id
            return response
    else:
        def middleware(request: HttpRequest):
            request.correlation_id = correlation_id_of(request)
            response = get_response(request)
            response[HEADER] = request.correlation_id
            return response
    return middleware
