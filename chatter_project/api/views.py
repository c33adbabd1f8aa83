"""Endpoints that belong to no app: API tokens, health and Prometheus metrics."""
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chatter_project.api.parsers import FormParser, JSONParser
from chatter_project.health import health_report
from chatter_project.metrics import metrics_text
from chatter_project.tokens import api_token_create

IssuedTokenSerializer = inline_serializer("IssuedToken", {
    "token": serializers.CharField(help_text="a new API token: shown this once (only its SHA-256 is stored)"),
})


class AuthTokenView(APIView):
    """POST username + password → {"token": key}, a new token each time, shown once; bad credentials → 400
    validation_error."""

    authentication_classes = ()  # a stale session cookie must not demand a CSRF token here
    permission_classes = ()
    parser_classes = (JSONParser, FormParser)  # the size-limited ones

    @extend_schema(request=AuthTokenSerializer, responses={200: IssuedTokenSerializer})
    def post(self, request: Request) -> Response:
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        _, key = api_token_create(user=serializer.validated_data["user"])
        return Response({"token": key})


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
