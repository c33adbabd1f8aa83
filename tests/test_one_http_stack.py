"""/api/v1/ and /langgraph/ are one HTTP stack: the same key authentication, key scopes, run throttle, body-size
limit, correlation ids, audit of refusals and error path, each surface answering in its own error shape (/api/v1/
{"error": {"code", "message", "details"}}, /langgraph/ {"detail": …} as LangGraph's SDK reads it)."""
from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from core.signals import access_denied
from keys.models import API_KEY_SCOPES
from tests.factories import ApiTokenFactory
from tests.surfaces import assert_surface_error
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
TURN = [{"role": "user", "content": "What is 12*7?"}]
# One route that starts a run on each surface, with the header its clients send the key in.
RUN_STARTS = {
    "api": ("/api/v1/executions/", {"template": "universal_chat", "input": {"message": "What is 12*7?"}},
            "authorization"),
    "langgraph": ("/langgraph/runs/wait", {"assistant_id": "universal_chat", "input": {"messages": TURN}},
                  "x-api-key"),
}


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()  # throttle counters are keyed by user id, and ids repeat across tests


def key_with(user, *scopes: str) -> str:
    return ApiTokenFactory(user=user, name="test", scopes=list(scopes)).key


def send(surface: str, key: str | None, *, body: bytes | None = None, headers: dict | None = None):
    path, run, header = RUN_STARTS[surface]
    sent = dict(headers or {})
    if key is not None:
        sent[header] = f"Token {key}" if header == "authorization" else key
    return Client().post(path, json.dumps(run).encode() if body is None else body, content_type="application/json",
                         headers=sent)


def error_message(surface: str, response) -> str:
    body = assert_surface_error(response.status_code, response["Content-Type"], response.content,
                                path=RUN_STARTS[surface][0])
    return body["error"]["message"] if surface == "api" else body["detail"]


@pytest.fixture
def denials():
    """The refusals sent to the audit (core.signals.access_denied), as (path, status)."""
    seen = []

    def heard(sender, *, path, status, **kwargs):
        seen.append((path, status))

    access_denied.connect(heard, dispatch_uid="test_one_http_stack")
    yield seen
    access_denied.disconnect(dispatch_uid="test_one_http_stack")


@pytest.mark.parametrize("surface", RUN_STARTS)
def test_a_key_without_the_runs_scope_is_a_403_in_the_surfaces_shape_audited_and_starts_nothing(
        alice, denials, surface):
    response = send(surface, key_with(alice, *(scope for scope in API_KEY_SCOPES if scope != "runs")))

    assert response.status_code == 403, response.content
    assert "(runs)" in error_message(surface, response)
    assert denials == [(RUN_STARTS[surface][0], 403)]
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("surface", RUN_STARTS)
def test_a_missing_or_unknown_key_is_a_401_in_the_surfaces_shape_and_audited(alice, denials, surface):
    for key in (None, "not-a-key"):
        response = send(surface, key)

        assert response.status_code == 401, (key, response.content)
        assert error_message(surface, response)
    assert denials == [(RUN_STARTS[surface][0], 401)] * 2


@pytest.mark.parametrize("surface", RUN_STARTS)
def test_the_run_throttle_is_a_429_with_retry_after_on_both_counting_one_allowance(alice, run_rate, surface):
    key = key_with(alice, *API_KEY_SCOPES)
    run_rate("2/min")
    other = "langgraph" if surface == "api" else "api"
    assert send(other, key).status_code in (200, 201)
    assert send(surface, key).status_code in (200, 201)
    runs = WorkflowExecution.objects.count()

    response = send(surface, key)

    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    assert "throttled" in error_message(surface, response).lower()
    assert WorkflowExecution.objects.count() == runs


@override_settings(CHATTER_MAX_REQUEST_BYTES=2048, DATA_UPLOAD_MAX_MEMORY_SIZE=2048)
@pytest.mark.parametrize("surface", RUN_STARTS)
def test_an_oversized_body_is_a_413_on_both_and_starts_nothing(alice, surface):
    path, run, _ = RUN_STARTS[surface]
    oversized = json.dumps({**run, "metadata": {"padding": "x" * 4096}}).encode()

    response = send(surface, key_with(alice, *API_KEY_SCOPES), body=oversized)

    assert response.status_code == 413, response.content
    assert "2048" in error_message(surface, response)
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("surface", RUN_STARTS)
def test_every_answer_carries_a_correlation_id_the_clients_own_when_usable(alice, surface):
    key = key_with(alice, *API_KEY_SCOPES)

    made = send(surface, key)
    kept = send(surface, key, headers={"X-Request-ID": "client-7f3a.b_c:1"})
    refused = send(surface, None, headers={"X-Request-ID": "client-refused"})
    replaced = send(surface, key, headers={"X-Request-ID": "bad id\twith spaces"})

    assert made.status_code in (200, 201) and len(made["X-Request-ID"]) == 32
    assert kept["X-Request-ID"] == "client-7f3a.b_c:1"
    assert refused.status_code == 401 and refused["X-Request-ID"] == "client-refused"
    assert replaced["X-Request-ID"] != "bad id\twith spaces" and len(replaced["X-Request-ID"]) == 32
    assert made["X-Request-ID"] != replaced["X-Request-ID"]


@pytest.mark.parametrize("surface", RUN_STARTS)
def test_a_run_a_request_starts_records_its_correlation_id_and_so_do_its_audit_rows(alice, surface):
    from audit.models import AuditEvent
    from audit.services import audit_queue_flush

    key = key_with(alice, *API_KEY_SCOPES)

    response = send(surface, key, headers={"X-Request-ID": f"trace-{surface}-42"})

    assert response.status_code in (200, 201) and response["X-Request-ID"] == f"trace-{surface}-42"
    execution = WorkflowExecution.objects.get(owner=alice)
    assert execution.correlation_id == f"trace-{surface}-42"
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    actions = set(AuditEvent.objects.filter(correlation_id=f"trace-{surface}-42").values_list("action", flat=True))
    assert {"execution.started", "execution.completed"} <= actions


def test_unknown_routes_and_public_reads_carry_one_too(alice):
    for path, status in (("/langgraph/no/such/route", 404), ("/api/v1/no/such/route/", 404), ("/langgraph/ok", 200),
                         ("/langgraph/info", 200)):
        response = Client().get(path)

        assert response.status_code == status, path
        assert len(response["X-Request-ID"]) == 32, path


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/langgraph/threads", b'{"metadata": ', 422),  # not JSON: LangGraph's server has no 400
    ("/langgraph/threads", b'{"thread_id": 7}', 422),  # not what the route takes
    ("/langgraph/threads/search", b'{"limit": "many"}', 422),
    ("/langgraph/threads/00000000-0000-0000-0000-000000000000", b"", 404),
])
def test_langgraph_refusals_are_its_detail_shape_with_the_status_the_sdk_maps(alice, path, body, status):
    key = key_with(alice, *API_KEY_SCOPES)

    response = Client().generic("POST" if body else "GET", path, body, content_type="application/json",
                                headers={"x-api-key": key})

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) >= {"detail"} and response.json()["detail"]


def test_a_wrong_method_on_langgraph_is_a_405_before_any_key_is_asked_for():
    response = Client().get("/langgraph/threads")

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"} and response["Allow"] == "POST"
