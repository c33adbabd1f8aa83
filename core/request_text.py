"""Refuse a NUL character in a request's path or query string before any view reads it: no field may hold one,
and PostgreSQL stores none in text or jsonb, so it would otherwise reach the database as a 500. (JSON bodies:
core.api.parsers.) The refusal is a SuspiciousOperation, which Django answers with handler400, in
the error shape of the surface asked (core.error_pages)."""
from __future__ import annotations

from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from django.utils.decorators import sync_and_async_middleware


class NulCharacter(SuspiciousOperation):
    pass


def nul_refuse(request: HttpRequest) -> None:
    if "\x00" in request.path:
        raise NulCharacter("the path contains a NUL character")
    if b"\x00" in unquote_to_bytes(request.META.get("QUERY_STRING", "")):
        raise NulCharacter("the query string contains a NUL character")


@sync_and_async_middleware
def nul_refusal_middleware(get_response):
    if iscoroutinefunction(get_response):
        async def middleware(request: HttpRequest):
            nul_refuse(request)
            return await get_response(request)
    else:
        def middleware(request: HttpRequest):
            nul_refuse(request)
            return get_response(request)
    return middleware
