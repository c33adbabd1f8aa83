"""/api/v1/health/ and /metrics (Prometheus)."""
from datetime import timedelta
from unittest import mock

import pytest
from django.db.utils import OperationalError
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from workflows.models import ExecutionEvent, LLMCall, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create

pytestmark = pytest.mark.django_db


def test_health_is_open_and_reports_every_part():
    response = Client().get("/api/v1/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "channel_layer", "cache", "queue", "stale_runs"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["stale_runs"]["count"] == 0


def test_a_stale_run_degrades_health(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))
    WorkflowExecution.objects.filter(pk=execution.pk).update(created_at=timezone.now() - timedelta(hours=2))

    body = Client().get("/api/v1/health/").json()

    assert body["status"] == "degraded" and body["checks"]["stale_runs"]["count"] == 1


def test_health_is_503_when_the_database_is_down():
    with mock.patch("chatter_project.health._database", side_effect=OperationalError("connection refused")):
        response = Client().get("/api/v1/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down" and body["checks"]["database"]["ok"] is False
    assert "connection refused" in body["checks"]["database"]["error"]


def metrics() -> dict:
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def test_metrics_count_runs_by_status_and_tokens_and_cost_by_model(api):
    for text in ("hello", "What is 2+2?"):
        assert api.post("/api/v1/chat/", {"message": text}).status_code == 201

    found = metrics()

    assert found[("chatter_runs", (("status", "completed"),))] == 2
    assert found[("chatter_runs", (("status", "failed"),))] == 0
    calls = LLMCall.objects.all()
    model = calls[0].model
    labels = (("model", model), ("provider", "local"))
    assert found[("chatter_llm_calls_total", labels)] == calls.count()
    prompt = sum(c.prompt_tokens for c in calls)
    assert found[("chatter_tokens_total", (("kind", "prompt"), *labels))] == prompt > 0
    assert found[("chatter_cost_usd_total", labels)] == pytest.approx(float(sum(c.cost for c in calls)))
    assert ("chatter_stale_runs", ()) in found


@pytest.mark.django_db(transaction=True)
def test_metrics_time_every_persisted_event_from_its_timestamp_to_its_hand_off(api):
    key, total = ("chatter_event_publish_latency_seconds_count", ()), ("chatter_event_publish_latency_seconds_sum", ())
    before = metrics()
    started = timezone.now()
    assert api.post("/api/v1/chat/", {"message": "What is 12*7?"}).status_code == 201
    elapsed = (timezone.now() - started).total_seconds()

    after = metrics()
    events = ExecutionEvent.objects.count()
    assert after[key] - before[key] == events > 0
    # Each event waited from its own timestamp, within the request: more than nothing, less than all of it.
    assert 0 < after[total] - before[total] <= events * elapsed
