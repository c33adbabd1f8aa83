"""/api/v1/health/, and what it and /metrics report: read-only checks of the parts a run needs, and usage totals."""
from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import caches
from django.db.models import Count, Sum
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import db


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check() or {}
    except Exception as exc:  # a health check reports failures, it never raises them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2), **detail}


def _database() -> dict:
    return db.database_answers()


def _channel_layer() -> dict:
    if not settings.REDIS_URL:
        return {"backend": "in-memory"}
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return {"backend": "redis"}


class CacheUnreachable(Exception):
    """The shared cache (Redis) did not answer."""


def _cache() -> dict:
    """The shared cache, where the run throttle counts; while it is unreachable the throttle counts per process
    (core/api/throttling.py) and runs go on."""
    if not settings.REDIS_URL:
        return {"backend": "local"}
    import redis

    try:
        caches["default"].has_key("chatter:health")
    except redis.RedisError as exc:
        raise CacheUnreachable(f"{exc}; run throttles count per process until it is back") from exc
    return {"backend": "redis"}


def _queue() -> dict:
    from django_q.brokers import get_broker

    return {"queued": get_broker().queue_size()}


def _stale_runs() -> dict:
    from workflows.models import WorkflowExecution

    return {"count": stale_runs_count(), "statuses": [WorkflowExecution.Status.PENDING, WorkflowExecution.Status.RUNNING]}


def stale_runs_count() -> int:
    """Runs the recovery sweep should have ended by now: the sweep's own rule (per-run timeout, heartbeat)."""
    from workflows.services.recovery import execution_overdue_count

    return execution_overdue_count()


def health_report() -> tuple[bool, dict]:
    """(database up, report). Without the database nothing works (503); a missing channel layer or queue only
    degrades live progress and background runs, a missing cache makes the run throttle per process, and stale
    runs are the sweep's to end."""
    checks = {"database": _timed(_database)}
    if checks["database"]["ok"]:
        checks["channel_layer"] = _timed(_channel_layer)
        checks["cache"] = _timed(_cache)
        checks["queue"] = _timed(_queue)
        checks["stale_runs"] = _timed(_stale_runs)
    healthy = all(check["ok"] for check in checks.values()) and not checks.get("stale_runs", {}).get("count")
    status = "ok" if healthy else ("down" if not checks["database"]["ok"] else "degraded")
    return checks["database"]["ok"], {"status": status, "checks": checks}


def usage_by_model() -> list[dict]:
    """Tokens and cost of every recorded LLM call, by provider and model (the ledger)."""
    from workflows.models import LLMCall

    return list(LLMCall.objects.values("provider", "model").annotate(
        calls=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        cached_prompt_tokens=Sum("cached_prompt_tokens"), reasoning_tokens=Sum("reasoning_tokens"),
        cost=Sum("cost")).order_by("provider", "model"))


def runs_by_status() -> dict[str, int]:
    from workflows.models import WorkflowExecution

    counts = dict(WorkflowExecution.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {status: counts.get(status, 0) for status in WorkflowExecution.Status.values}


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
