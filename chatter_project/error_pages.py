"""Django's handler400, handler404 and handler500: what is answered outside a view (a request refused before
routing, a path no route has, a crash) in the error shape of the surface asked. /api/v1/: {"error": {"code",
"message", "details"}}; /langgraph/: {"detail": …}; /v1/: OpenAI's {"error": {"message", "type", "param",
"code"}}; Django's own pages elsewhere."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from core.api.exceptions import error_body
from gateway.views import openai_error


def _surface_error(request: HttpRequest, *, status: int, code: str, message: str) -> HttpResponse | None:
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(code, message), status=status)
    if request.path.startswith("/langgraph/"):
        return JsonResponse({"detail": "Not Found" if status == 404 else message}, status=status)
    if request.path.startswith("/v1/"):
        return JsonResponse(openai_error(status=status, code=code, message=message), status=status)
    return None


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: Django's answer to a SuspiciousOperation (a NUL in the path or query, a bad Host header)."""
    return (_surface_error(request, status=400, code="parse_error", message=f"bad request: {exception}")
            or defaults.bad_request(request, exception))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return (_surface_error(request, status=404, code="not_found", message="not found")
            or defaults.page_not_found(request, exception))


def server_error(request: HttpRequest) -> HttpResponse:
    return (_surface_error(request, status=500, code="server_error", message="internal server error")
            or defaults.server_error(request))
