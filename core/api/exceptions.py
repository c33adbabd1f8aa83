"""The one API error path (DRF's EXCEPTION_HANDLER): every error leaves in its surface's shape, /api/v1/'s being
{"error": {"code": …, "message": …, "details": …}}."""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.api.parsers import body_too_large
from core.errors import (
    ChatterError,
    Unavailable,
    error_details,
)
from core.signals import access_denied

logger = logging.getLogger(__name__)
ACCESS_DENIED = (exceptions.NotAuthenticated, exceptions.AuthenticationFailed, exceptions.PermissionDenied)


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": message, "details": error_details(details, code=code)}}


class ErrorShape:
    """How a surface's errors look: /api/v1/'s {"error": {"code", "message", "details"}} (this class); another dialect
    on the same stack (/langgraph/'s {"detail": …}: agent_server.http) is a subclass, its views selecting it through
    DRF's get_exception_handler. What a status is, its headers, the rollback and the audit of refusals are
    exception_response's, shared by every shape; a shape adds only what its dialect's clients read besides
    (refusal_headers)."""

    def chatter_error(self, exc: ChatterError) -> tuple[int, Any]:
        return exc.status, exc.as_dict()

    def refusal_headers(self, exc: ChatterError, *, status: int) -> dict[str, str]:
        """Headers the surface's clients read on this refusal besides its status's own: none on /api/v1/."""
        return {}

    def api_error(self, exc: exceptions.APIException) -> tuple[int, Any]:
        return exc.status_code, _api_exception_body(exc)

    def server_error(self) -> Any:
        return error_body("server_error", "internal server error")

    def error_page(self, *, status: int, code: str, message: str) -> Any:
        """The body of an error answered outside any view (core.error_pages)."""
        return error_body(code, message)


CHATTER_ERRORS = ErrorShape()


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error in /api/v1/'s shape (exception_response)."""
    return exception_response(exc, context, shape=CHATTER_ERRORS)


def exception_response(exc: Exception, context: dict, *, shape: ErrorShape) -> Response | None:
    """The one error path of every DRF view: ChatterError subclasses carry their own status and code; DRF's and
    Django's exceptions are mapped onto them; anything else is a bug, a logged 500. `shape` renders the body."""
    exc = _as_api_error(exc)
    if isinstance(exc, ChatterError):
        set_rollback()
        status, body = shape.chatter_error(exc)
        headers = {"Retry-After": "1"} if isinstance(exc, Unavailable) else {}
        headers.update(shape.refusal_headers(exc, status=status))
        return Response(body, status=status, headers=headers or None)
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        status, body = shape.api_error(exc)
        response = Response(body, status=status, headers=_api_exception_headers(exc))
        if isinstance(exc, ACCESS_DENIED) and context.get("request") is not None:
            _audit_access_denied(context["request"], response)
        return response
    if settings.DEBUG:
        return None  # Django's debug page, with the traceback
    logger.error("unhandled API error", exc_info=exc)
    set_rollback()
    return Response(shape.server_error(), status=500)


def _as_api_error(exc: Exception) -> Exception:
    """Django's exceptions (and a busy pool) as the API's."""
    if isinstance(exc, RequestDataTooBig):  # Django's own check of DATA_UPLOAD_MAX_MEMORY_SIZE (= our limit)
        return body_too_large()
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, TooManyFieldsSent):
        return exceptions.ParseError(f"too many query or form parameters (at most "
                                     f"{settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})")
    if isinstance(exc, DjangoValidationError):  # a model field refused a value a request gave it (a lookup's id)
        return exceptions.ValidationError(exc.messages)
    if isinstance(exc, SuspiciousOperation):
        return exceptions.ParseError(f"bad request: {exc}")
    if _is_pool_timeout(exc):
        return Unavailable(f"the server is busy: no database connection freed up within "
                           f"{settings.DATABASES['default']['OPTIONS']['pool']['timeout']} s; try again",
                           code="server_busy", details=[{"path": "", "code": "retry_after", "message": "1"}])
    return exc


def _is_pool_timeout(exc: Exception) -> bool:
    """Django's connection pool found no free connection in time (a busy server, not a broken one)."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # SQLite installations need no pool
        return False
    return isinstance(exc, OperationalError) and isinstance(exc.__cause__, PoolTimeout)


def _audit_access_denied(request, response: Response) -> None:
    """Send access_denied (the audit app writes `access.denied` in its own transaction) once the response is
    rendered: Django renders it after the view has returned, so after the request's transaction under
    ATOMIC_REQUESTS, which set_rollback() has doomed (not enabled in our settings, but it must not lose the row)."""
    def record(rendered: Response) -> None:
        access_denied.send(sender=None, user=request.user, ip=request.META.get("REMOTE_ADDR"),
                           method=request.method, path=request.path, status=rendered.status_code)

    response.add_post_render_callback(record)


def _api_exception_body(exc: exceptions.APIException) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        return error_body("validation_error", "invalid input", exc.detail)  # details: the field errors
    if isinstance(exc.detail, (list, dict)):
        return error_body(exc.default_code, str(exc.default_detail), exc.detail)
    code = exc.get_codes()
    details = None
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:  # seconds, also in Retry-After
        details = [{"path": "", "code": "wait", "message": str(exc.wait)}]
    return error_body(code if isinstance(code, str) else exc.default_code, str(exc.detail), details)


def _api_exception_headers(exc: exceptions.APIException) -> dict[str, str]:
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    headers.update(getattr(exc, "response_headers", None) or {})  # what a refusal says besides (x-ratelimit-*)
    return headers
