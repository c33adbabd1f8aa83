"""The HTTP plumbing of /langgraph/: what LangGraph's clients send and expect, not /api/v1/'s conventions.

Auth is a Chatter API key in the SDK's `x-api-key` header (or `Authorization: Token|Bearer <key>`), held to its
scopes and to the run throttle by the checks every surface shares (chatter_project.auth, .api.throttling); bodies are
JSON validated by pydantic models; errors are `{"detail": …}` with the status the SDK maps to its exceptions
(404 for another user's thread or run, as for a missing one)."""
from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Callable

from channels.db import database_sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ValidationError
from rest_framework.exceptions import AuthenticationFailed, ParseError, Throttled
from rest_framework.permissions import SAFE_METHODS

from chatter_project.api.parsers import json_parse
from chatter_project.api.throttling import run_throttle_wait
from chatter_project.auth import api_key_authenticate, key_scope_refusal
from chatter_project.errors import ChatterError
from chatter_project.signals import access_denied

logger = logging.getLogger(__name__)
AUTH_SCHEMES = ("token", "bearer")


class ApiError(Exception):
    """An answer other than 2xx, in the shape LangGraph's server gives."""

    def __init__(self, status: int, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


def request_key(request: HttpRequest) -> str:
    """The API key the request carries ("" when none): the SDK's x-api-key, or Authorization: Token|Bearer."""
    key = request.headers.get("x-api-key", "")
    if not key:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        key = value.strip() if scheme.lower() in AUTH_SCHEMES else ""
    return key


def body_of(request: HttpRequest, model: type[BaseModel]):
    """The request's JSON body, read as every surface reads JSON (no NUL in any text: PostgreSQL stores none), validated
    into `model` (an empty body is an empty object): 422 when it is not."""
    try:
        raw = json_parse(request.body or b"{}")
    except ParseError as exc:
        raise ApiError(422, str(exc.detail)) from None
    return _validated(model, {} if raw is None else raw)


def json_parse_or_none(request: HttpRequest):
    """The request's JSON body as parsed (any JSON), or None when it is none: for a handler that answers a bad
    body in its own protocol's shape."""
    try:
        return json_parse(request.body or b"null")
    except ParseError:
        return None


def query_of(request: HttpRequest, model: type[BaseModel]):
    """The request's query parameters (the last value of each) validated into `model`: 422 when they are not."""
    return _validated(model, request.GET.dict())


def _validated(model: type[BaseModel], raw):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(422, json.loads(exc.json(include_url=False, include_input=False))) from None


def json_response(data, status: int = 200, headers: dict | None = None) -> JsonResponse:
    return JsonResponse(data, status=status, safe=False, encoder=DjangoJSONEncoder, headers=headers)


def _error_response(exc: Exception) -> JsonResponse:
    if isinstance(exc, ApiError):
        return json_response({"detail": exc.detail}, status=exc.status)
    if isinstance(exc, ChatterError):
        return json_response({"detail": exc.message, "code": exc.code, "errors": exc.as_dict()["error"]["details"]},
                             status=422 if exc.status == 400 else exc.status)
    return json_response({"detail": "the body is too large"}, status=413)


def _response(result) -> HttpResponseBase:
    if isinstance(result, HttpResponseBase):
        return result
    return HttpResponse(status=204) if result is None else json_response(result)


_HANDLED = (ApiError, ChatterError, RequestDataTooBig)
_UNAUTHORIZED = "Missing or invalid API key (x-api-key)"
READ = "read"
Scope = str | Callable[[HttpRequest], str]
StartsRuns = bool | Callable[[HttpRequest], bool]


def _refused(request: HttpRequest, *, status: int, detail: str, user=None) -> JsonResponse:
    """A refusal, audited like every surface's (chatter_project.signals.access_denied)."""
    access_denied.send(sender=None, user=user, ip=request.META.get("REMOTE_ADDR"), method=request.method,
                       path=request.path, status=status)
    return json_response({"detail": detail}, status=status)


def _authorize(request: HttpRequest, *, scope: Scope, starts_runs: StartsRuns):
    """The request's user, or the response refusing it: the shared checks of every surface, in DRF's order
    (authentication, the key's scope, the run throttle). The concurrent-run limit is the run path's own
    (workflows.services.runs), like on every surface."""
    try:
        token = api_key_authenticate(request_key(request))
    except AuthenticationFailed:
        return _refused(request, status=401, detail=_UNAUTHORIZED)
    writing = request.method not in SAFE_METHODS
    needed = scope(request) if callable(scope) else (scope if writing else READ)
    refusal = key_scope_refusal(token, needed)
    if refusal is not None:
        return _refused(request, status=403, detail=refusal, user=token.user)
    request.auth = token  # the key that made the request, as DRF's request.auth holds it on /api/v1/
    if writing and (starts_runs(request) if callable(starts_runs) else starts_runs):
        wait = run_throttle_wait(user=token.user)
        if wait is not None:
            throttled = Throttled(wait)  # DRF's message and rounding, as /api/v1/ answers
            return json_response({"detail": str(throttled.detail)}, status=429,
                                 headers={"Retry-After": str(throttled.wait)})
    return token.user


def method_not_allowed(methods) -> JsonResponse:
    """405 as LangGraph's server answers it, naming the methods the route takes (Allow)."""
    return json_response({"detail": "Method Not Allowed"}, status=405, headers={"Allow": ", ".join(methods)})


def not_found() -> JsonResponse:
    """404 for a path no route of /langgraph/ has, as LangGraph's server answers it."""
    return json_response({"detail": "Not Found"}, status=404)


def langgraph_endpoint(*methods: str, scope: Scope | None = None, starts_runs: StartsRuns = False,
                       public: bool = False) -> Callable:
    """A view of /langgraph/: the method check, the API key and what it may do, and errors rendered as
    {"detail": …}. `scope`: what a key needs for the route's writes (its GETs need "read"), or a function of the
    request saying what it needs; `starts_runs`: its writes start runs, so they take one from the run throttle (or a
    function of the request saying whether this one does: one route, several kinds of message);
    `public`: a read answered without a key (the server's liveness and info, as LangGraph's server answers them),
    its handler getting None for the user.
    The handler gets (request, user, **kwargs) and returns a response, or data to send as JSON (None: 204). An async
    handler (one that waits for a run through its feed) is served as an async view; its ORM work goes through
    database_sync_to_async like every async reader's."""
    writes = set(methods) - set(SAFE_METHODS)
    if scope is None and writes:
        raise TypeError(f"a /langgraph/ route that writes ({', '.join(methods)}) must say the key scope it needs")
    if public and (writes or scope is not None or starts_runs):
        raise TypeError("a public /langgraph/ route only reads: no key, so no scope and no runs")
    needs = {"scope": scope or READ, "starts_runs": starts_runs}

    def decorate(handler: Callable) -> Callable:
        if asyncio.iscoroutinefunction(handler):
            async def async_view(request: HttpRequest, **kwargs) -> HttpResponseBase:
                if request.method not in methods:
                    return method_not_allowed(methods)
                user = None if public else await database_sync_to_async(_authorize)(request, **needs)
                if isinstance(user, HttpResponseBase):
                    return user
                try:
                    return _response(await handler(request, user, **kwargs))
                except _HANDLED as exc:
                    return _error_response(exc)

            return csrf_exempt(functools.wraps(handler)(async_view))

        def view(request: HttpRequest, **kwargs) -> HttpResponseBase:
            if request.method not in methods:
                return method_not_allowed(methods)
            user = None if public else _authorize(request, **needs)
            if isinstance(user, HttpResponseBase):
                return user
            try:
                return _response(handler(request, user, **kwargs))
            except _HANDLED as exc:
                return _error_response(exc)

        return csrf_exempt(functools.wraps(handler)(view))

    return decorate
