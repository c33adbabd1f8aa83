"""Endpoints that belong to no app: health and Prometheus metrics."""
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatter_project.health import health_report
from chatter_project.metrics import metrics_text

HealthSerializer = inline_serializer("Health", {
    "status": serializers.ChoiceField(choices=["ok", "degraded", "down"]),
    "checks": serializers.DictField(child=serializers.DictField()),
})


class HealthView(APIView):
    """Database, channel layer, queue and stale runs. Open to load balancers (no auth, no per-user data);
    503 when the database is down."""

    authentication_classes = ()
    permission_classes = ()

    @extend_schema(responses={200: HealthSerializer, 503: OpenApiResponse(HealthSerializer, "database down")})
    def get(self, request: Request) -> Response:
        database_up, report = health_report()
        return Response(report, status=200 if database_up else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for scrapers (no auth; totals only, nothing per user)."""
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
