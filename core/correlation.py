"""Correlation ids: every answer carries `X-Request-ID`, the same on every surface (/api/v1/, /langgraph/, /v1/,
whatever view or error answered, unless the view named its own: the gateway answers with its run's id): the client's
own when it sent a usable one (so its logs and ours name the request alike), else a new one. The request knows it as
`request.correlation_id`, and a run the request starts records it as its `correlation_id` (current_correlation_id),
which its audit rows carry."""
from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest
from django.utils.decorators import sync_and_async_middleware

HEADER = "X-Request-ID"
_USABLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # what a correlation_id column holds (64), nothing a log could trip on


_current: ContextVar[str] = ContextVar("correlation_id", default="")


def current_correlation_id() -> str:
    """The correlation id of the request being served ("" outside one: a task, a command)."""
    return _current.get()


def correlation_id_of(request: HttpRequest) -> str:
    sent = request.headers.get(HEADER, "")
    return sent if sent and _USABLE.fullmatch(sent) else secrets.token_hex(16)


@sync_and_async_middleware
def correlation_id_middleware(get_response):
    if iscoroutinefunction(get_response):
        async def middleware(request: HttpRequest):
            request.correlation_id = correlation_id_of(request)
            token = _current.set(request.correlation_id)
            try:
                response = await get_response(request)
            finally:
                _current.reset(token)
            response.setdefault(HEADER, request.correlation_id)
            return response
    else:
        def middleware(request: HttpRequest):
            request.correlation_id = correlation_id_of(request)
            token = _current.set(request.correlation_id)
            try:
                response = get_response(request)
            finally:
                _current.reset(token)
            response.setdefault(HEADER, request.correlation_id)
            return response
    return middleware
