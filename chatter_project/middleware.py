"""Project middleware."""
from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse

from chatter_project.concurrency import work_slot
from chatter_project.errors import Unavailable

# Answered without waiting in line: a load balancer or scraper must see a busy server as alive.
UNQUEUED_PATHS = ("/api/v1/health/", "/metrics")


class ConcurrencyLimitMiddleware:
    """Each request holds one of the process's work slots (chatter_project/concurrency.py) while Django handles
    it; past CHATTER_QUEUE_TIMEOUT_S in line it is a 503 in the one error shape, with Retry-After. A streaming
    response gives its slot back before it streams (a streamed run takes a slot of its own)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path in UNQUEUED_PATHS:
            return self.get_response(request)
        try:
            # get_response never raises (Django turns every exception into a response), so an Unavailable
            # here can only be the wait for a slot.
            with work_slot(timeout=settings.CHATTER_QUEUE_TIMEOUT_S):
                return self.get_response(request)
        except Unavailable as exc:
            return JsonResponse(exc.as_dict(), status=exc.status, headers={"Retry-After": "1"})
