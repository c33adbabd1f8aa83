"""Django's handler400, handler404 and handler500: what is answered outside a view (a request refused before
routing, a path no route has, a crash) in the error shape of the surface asked, each surface's ErrorShape named
by its path prefix in the project's URLconf; Django's own pages elsewhere."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from core.api.exceptions import ErrorShape


class ErrorPages:
    def __init__(self, shapes: dict[str, ErrorShape]):
        self.shapes = shapes

    def _surface_error(self, request: HttpRequest, *, status: int, code: str, message: str) -> HttpResponse | None:
        for prefix, shape in self.shapes.items():
            if request.path.startswith(prefix):
                return JsonResponse(shape.error_page(status=status, code=code, message=message), status=status)
        return None

    def bad_request(self, request: HttpRequest, exception: Exception) -> HttpResponse:
        """handler400: Django's answer to a SuspiciousOperation (a NUL in the path or query, a bad Host header)."""
        return (self._surface_error(request, status=400, code="parse_error", message=f"bad request: {exception}")
                or defaults.bad_request(request, exception))

    def page_not_found(self, request: HttpRequest, exception: Exception) -> HttpResponse:
        return (self._surface_error(request, status=404, code="not_found", message="not found")
                or defaults.page_not_found(request, exception))

    def server_error(self, request: HttpRequest) -> HttpResponse:
        return (self._surface_error(request, status=500, code="server_error", message="internal server error")
                or defaults.server_error(request))
