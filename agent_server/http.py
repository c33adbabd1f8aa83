"""/langgraph/'s dialect on the project's one HTTP stack (DRF, as /api/v1/ and /v1/): what LangGraph's clients send
and expect, not /api/v1/'s conventions (docs/api/langgraph.md#one-http-stack).

Every view is a `LangGraphView`: a Chatter API key (`x-api-key`, or `Authorization: Token|Bearer <key>`) held to its
scopes (`key_scope` for writes, `key_scope_read` for reads) and, where a write starts a run, the run throttle; bodies
read by the size-limited JSON parser and validated by pydantic models in one place (`body`, `query`); errors through
the one error path in LangGraph's shape, `{"detail": …}`, with the statuses the SDK maps to its exceptions.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

from channels.db import database_sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse
from pydantic import BaseModel, ValidationError
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from agent_server.run_selectors import run_ended
from core.api.exceptions import ErrorShape, exception_response
from core.api.parsers import JSONParser, body_read
from core.api.schema import AgentServerSchema
from core.api.throttling import RUNS, RunThrottle
from keys.auth import (
    ApiKeyBearerAuthentication,
    ApiKeyHeaderAuthentication,
    ApiKeyScope,
    ApiTokenAuthentication,
)
from core.errors import ChatterError, error_details

READ = "read"
WAIT_HEARTBEAT_S = 5.0  # the stock server's interval of /runs/wait's keep-alive newlines
UNAUTHORIZED = "Missing or invalid API key (x-api-key)"


class ApiError(exceptions.APIException):
    """An answer other than 2xx, in the shape LangGraph's server gives: `detail` as given (a message, or
    pydantic's list of errors)."""

    def __init__(self, status: int, detail: Any):
        super().__init__()
        self.status_code, self.detail = status, detail


class LangGraphErrors(ErrorShape):
    """{"detail": …}: 401 for a missing or bad key, 403 for a key without the scope, 405 naming the methods (Allow),
    413, 422 for any input refused (LangGraph's server has no 400), 429 with Retry-After."""

    def chatter_error(self, exc: ChatterError) -> tuple[int, Any]:
        return (422 if exc.status == 400 else exc.status), {
            "detail": exc.message, "code": exc.code, "errors": error_details(exc.details, code=exc.code)}

    def api_error(self, exc: exceptions.APIException) -> tuple[int, Any]:
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            return 401, {"detail": UNAUTHORIZED}
        if isinstance(exc, exceptions.MethodNotAllowed):
            return 405, {"detail": "Method Not Allowed"}
        if isinstance(exc, (ApiError, exceptions.ValidationError)):
            detail = exc.detail
        else:
            detail = str(exc.detail)
        return (422 if exc.status_code == 400 else exc.status_code), {"detail": detail}

    def server_error(self) -> Any:
        return {"detail": "internal server error"}

    def error_page(self, *, status: int, code: str, message: str) -> Any:
        return {"detail": "Not Found" if status == 404 else message}


LANGGRAPH_ERRORS = LangGraphErrors()


def langgraph_exception_handler(exc: Exception, context: dict) -> Response | None:
    return exception_response(exc, context, shape=LANGGRAPH_ERRORS)


class AnyTypeJSONParser(JSONParser):
    """A body is JSON whatever its Content-Type says, as LangGraph's server reads it."""

    media_type = "*/*"


class BodyBytes(BaseParser):
    """The body as bytes (size-limited like every body), for a protocol that answers a body that is not JSON in
    its own shape (MCP's JSON-RPC, the thread protocol's commands)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        return body_read(stream)


class JSONOnly(BaseContentNegotiation):
    """Every answer is JSON (streams are responses of their own), whatever the client's Accept says: DRF's
    documented way to ignore it."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class LangGraphJSONRenderer(JSONRenderer):
    encoder_class = DjangoJSONEncoder  # dates, UUIDs and decimals as Django writes them


class LangGraphView(APIView):
    """A view of /langgraph/ (see the module's docstring). A subclass says what a key needs for its writes
    (`key_scope`; its GETs need "read", or `key_scope_read`) and whether its writes start runs (`starts_runs`: they
    take one from the run throttle). An unknown method is a 405 before the key is asked for, as LangGraph's server
    answers."""

    authentication_classes = (ApiKeyHeaderAuthentication, ApiTokenAuthentication, ApiKeyBearerAuthentication)
    permission_classes = (IsAuthenticated, ApiKeyScope)
    parser_classes = (AnyTypeJSONParser,)
    renderer_classes = (LangGraphJSONRenderer,)
    content_negotiation_class = JSONOnly
    http_method_names = ["get", "post", "put", "patch", "delete"]  # no HEAD or OPTIONS (CORS answers preflights)
    throttle_scope = RUNS
    starts_runs = False
    schema = AgentServerSchema()  # in the OpenAPI document under "Agent Server", documented as LangGraph's

    def initial(self, request, *args, **kwargs):
        if not hasattr(self, request.method.lower()) or request.method.lower() not in self.http_method_names:
            self.http_method_not_allowed(request)
        super().initial(request, *args, **kwargs)

    def get_throttles(self):
        return [RunThrottle()] if self.request.method not in SAFE_METHODS and self.starts_runs else []

    def get_exception_handler(self):
        return langgraph_exception_handler

    def body(self, model: type[BaseModel]):
        """The request's JSON body (an empty one: an empty object) validated into `model`: 422 when it is not."""
        data = self.request.data
        return validated(model, {} if data is None else data)

    def query(self, model: type[BaseModel], *, lists: tuple[str, ...] = ()):
        """The request's query parameters (the last value of each; every value of those named in `lists`, as
        `?select=a&select=b`) validated into `model`: 422 when they are not."""
        params = self.request.query_params
        return validated(model, {**params.dict(), **{name: params.getlist(name) for name in lists if name in params}})

    def flag(self, name: str) -> bool:
        return self.request.query_params.get(name, "").lower() in ("1", "true")


class PublicView(LangGraphView):
    """A read answered without a key: the server's liveness and info, as LangGraph's server answers them."""

    authentication_classes = ()
    permission_classes = ()


def validated(model: type[BaseModel], raw):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(422, json.loads(exc.json(include_url=False, include_input=False))) from None


def json_null() -> HttpResponse:
    """JSON's null, as LangGraph's server answers a store item that is not there (DRF renders None as nothing)."""
    return HttpResponse(b"null", content_type="application/json")


def answer_when_ended(execution, answer: Callable[[], Any], *, status: int = 200,
                      headers: dict | None = None) -> HttpResponseBase:
    """`answer()` as JSON once the run has ended or paused for input. Now when it has (a run that ran in this
    request, or one that had ended); else a response whose body is written when it has: an async iterator
    awaiting the run's feed (agent_server.run_selectors.run_ended), served by Django under ASGI without holding a thread.
    Meanwhile a newline every WAIT_HEARTBEAT_S keeps the connection alive through proxies that cut an idle one, as
    the stock server does (whitespace before a JSON document is part of it: every JSON parser skips it)."""
    if execution.is_terminal or execution.status == execution.Status.WAITING:
        return Response(answer(), status=status, headers=headers)

    async def body():
        ended = asyncio.ensure_future(run_ended(execution_id=execution.pk))
        try:
            while not (await asyncio.wait({ended}, timeout=WAIT_HEARTBEAT_S))[0]:
                yield b"\n"
            ended.result()
        finally:
            ended.cancel()  # the client went away: stop waiting for it
        yield json.dumps(await database_sync_to_async(answer)(), cls=DjangoJSONEncoder)

    return StreamingHttpResponse(body(), status=status, content_type="application/json", headers=headers)
