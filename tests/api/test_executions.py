"""POST/GET /api/v1/executions/, GET /api/v1/executions/<id>/ and POST …/cancel/."""
import uuid
from decimal import Decimal

import pytest

from tests.api.conftest import assert_error, error_fields, row_counts
from tests.api.sse import parse_sse
from tests.api.test_chat import EXECUTION_FIELDS, TOKENS
from tests.factories import ConversationFactory, WorkflowDefinitionFactory
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, LLMCall, WorkflowExecution
from workflows.services.run_requests import ExecutionRequest
from workflows.services.runs import execution_create, execution_run

URL = "/api/v1/executions/"
LINEAR = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


# --- create ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_graph_runs_synchronously_and_answers_201(api):
    response = api.post(URL, {"graph": LINEAR, "input": {"message": "hi", "variables": {"k": 1}},
                              "config": {"temperature": 0.5}})

    assert response.status_code == 201
    body = response.json()
    assert body["conversation"] is None and body["messages"] == []
    execution = body["execution"]
    assert set(execution) == EXECUTION_FIELDS
    assert (execution["workflow_type"], execution["status"], execution["mode"]) == ("custom", "completed", "sync")
    assert execution["template"] is None and execution["definition"] is None
    assert execution["input_data"] == {"message": "hi", "variables": {"k": 1}}
    assert "You said" in execution["output_data"]["content"]
    assert execution["config"]["temperature"] == 0.5
    row = WorkflowExecution.objects.get(pk=execution["id"])
    for field in TOKENS:
        assert execution[field] == getattr(row, field) > 0
    assert execution["cost"] == str(row.cost)
    assert_all(row)


@pytest.mark.django_db
def test_a_template_runs_by_key(api):
    execution = api.post(URL, {"template": "universal_chat", "input": {"message": "What is 6*7?"}}).json()["execution"]
    assert (execution["workflow_type"], execution["template"], execution["status"]) == (
        "template", "universal_chat", "completed")
    assert "42" in execution["output_data"]["content"]


@pytest.mark.django_db
def test_a_definition_runs_by_id(api, alice):
    definition = WorkflowDefinitionFactory(owner=alice, name="linear", **LINEAR)
    execution = api.post(URL, {"definition_id": str(definition.pk), "input": {"message": "hi"}}).json()["execution"]
    assert (execution["workflow_type"], execution["definition"], execution["definition_version"]) == (
        "definition", str(definition.pk), 1)


@pytest.mark.django_db
def test_a_run_in_a_conversation_returns_both_messages(api, alice):
    conversation = ConversationFactory(owner=alice)
    body = api.post(URL, {"template": "universal_chat", "input": {"message": "hello"},
                          "conversation_id": str(conversation.pk)}).json()

    assert body["conversation"]["id"] == str(conversation.pk)
    assert body["conversation"]["message_count"] == 2
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["total_tokens"] == body["execution"]["total_tokens"]


@pytest.mark.django_db
@pytest.mark.parametrize("payload, fields", [
    ({}, {""}),
    ({"template": "universal_chat", "graph": LINEAR}, {""}),
    ({"template": None, "definition_id": None}, {""}),
    ({"definition_id": "nope"}, {"definition_id"}),
    ({"graph": [1, 2]}, {"graph"}),
    ({"graph": LINEAR, "mode": "turbo"}, {"mode"}),
    ({"graph": LINEAR, "config": {"temperature": 7, "bogus": 1}}, {"config"}),
    ({"graph": LINEAR, "config": "hot"}, {"config"}),
    ({"graph": LINEAR, "input": {"message": ["a"]}}, {"input"}),
    ({"graph": LINEAR, "input": {"variables": [1]}}, {"input"}),
    ({"graph": LINEAR, "input": "hi"}, {"input"}),
    ({"graph": LINEAR, "conversation_id": "abc"}, {"conversation_id"}),
])
def test_bad_input_is_a_400_naming_the_fields_and_leaves_no_row(api, payload, fields):
    before = row_counts()
    assert error_fields(assert_error(api.post(URL, payload), 400, "validation_error")) == fields
    assert row_counts() == before


@pytest.mark.django_db
def test_config_errors_are_reported_like_the_engine_reports_them(api):
    details = assert_error(api.post(URL, {"graph": LINEAR, "config": {"temperature": 7}}), 400, "validation_error")
    assert details == [{"path": "config.temperature", "code": "out_of_range",
                        "message": "temperature must be between 0 and 2"}]


@pytest.mark.django_db
def test_an_invalid_graph_is_a_400_with_the_validation_errors_and_no_row(api):
    graph = {"nodes": [*LINEAR["nodes"], {"id": "x", "type": "teleport"}], "edges": LINEAR["edges"]}
    before = row_counts()

    details = assert_error(api.post(URL, {"graph": graph}), 400, "invalid_graph")

    assert any(error["path"].startswith("nodes[3]") for error in details)
    assert row_counts() == before


@pytest.mark.django_db
def test_someone_elses_definition_or_conversation_is_a_404_and_no_row(api, bob):
    definition = WorkflowDefinitionFactory(owner=bob, name="bob's", **LINEAR)
    conversation = ConversationFactory(owner=bob)
    before = row_counts()

    assert_error(api.post(URL, {"definition_id": str(definition.pk)}), 404, "not_found")
    assert_error(api.post(URL, {"graph": LINEAR, "conversation_id": str(conversation.pk)}), 404, "not_found")
    assert_error(api.post(URL, {"template": "no-such-template"}), 404, "not_found")
    assert row_counts() == before


@pytest.mark.django_db
def test_background_mode_answers_202_with_the_pending_run(api):
    response = api.post(URL, {"graph": LINEAR, "mode": "background"}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert WorkflowExecution.objects.get().mode == "background"


@pytest.mark.django_db
def test_a_background_runs_202_says_where_to_poll(api):
    response = api.post(URL, {"graph": LINEAR, "mode": "background"}, format="json")

    assert response.status_code == 202
    body = response.json()
    assert set(body) == EXECUTION_FIELDS | {"links"}
    run_url = f"{URL}{body['id']}/"
    assert response["Location"] == body["links"]["self"] == run_url
    assert body["links"]["events"] == f"{run_url}events/"
    assert api.get(response["Location"]).json()["id"] == body["id"]
    assert api.get(body["links"]["events"]).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_stream_mode_answers_with_the_runs_events_as_sse(async_client, alice):
    await async_client.aforce_login(alice)

    response = await async_client.post(URL, {"graph": LINEAR, "input": {"message": "hi"}, "mode": "stream"},
                                       content_type="application/json")

    assert response["Content-Type"] == "text/event-stream"
    frames = parse_sse(b"".join([c async for c in response.streaming_content]).decode())
    execution = await WorkflowExecution.objects.aget(owner=alice)
    persisted = [f for f in frames if f.id is not None]
    assert [f.envelope["seq"] for f in persisted] == list(range(1, await execution.events.acount() + 1))
    assert persisted[-1].event == frames[-1].event == "workflow_completed"
    assert "".join(f.envelope["data"]["text"] for f in frames if f.event == "token") == (
        execution.output_data["content"])
    assert frames[-1].envelope["data"]["total_tokens"] == execution.total_tokens > 0
    assert Decimal(frames[-1].envelope["data"]["cost"]) == execution.cost


# --- list -----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_list_is_the_owners_newest_first_and_paginated(api, bob_api, alice):
    ids = [api.post(URL, {"graph": LINEAR}).json()["execution"]["id"] for _ in range(3)]
    bob_api.post(URL, {"graph": LINEAR})

    page = api.get(f"{URL}?page_size=2").json()

    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 3
    assert [e["id"] for e in page["results"]] == ids[::-1][:2]
    assert set(page["results"][0]) == EXECUTION_FIELDS
    assert [e["id"] for e in api.get(page["next"]).json()["results"]] == ids[:1]
    bobs = bob_api.get(URL).json()
    assert bobs["count"] == 1 and not {e["id"] for e in bobs["results"]} & set(ids)


@pytest.mark.django_db
def test_the_list_filters_by_status_and_workflow_type(api, alice):
    done = api.post(URL, {"graph": LINEAR}).json()["execution"]["id"]
    chat = api.post("/api/v1/chat/", {"message": "hi"}).json()["execution"]["id"]
    pending = str(execution_create(ExecutionRequest(owner=alice, graph=LINEAR)).pk)

    def ids(query: str) -> list[str]:
        return [e["id"] for e in api.get(f"{URL}?{query}").json()["results"]]

    assert ids("status=pending") == [pending]
    assert ids("status=completed") == [chat, done]
    assert ids("workflow_type=chat") == [chat]
    assert ids("workflow_type=custom&status=completed") == [done]
    assert ids("ordering=created_at") == [done, chat, pending]
    assert error_fields(assert_error(api.get(f"{URL}?status=sleeping"), 400, "validation_error")) == {"status"}


@pytest.mark.django_db
def test_a_page_past_the_end_is_a_404(api):
    assert_error(api.get(f"{URL}?page=9"), 404, "not_found")


# --- detail ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_detail_has_the_node_trace_tool_calls_and_llm_calls(api):
    execution_id = api.post("/api/v1/chat/", {"message": "What is 12*7?"}).json()["execution"]["id"]

    body = api.get(f"{URL}{execution_id}/").json()

    assert set(body) == EXECUTION_FIELDS | {"graph", "node_executions", "tool_call_log", "llm_call_log",
                                             "provider_attempts"}
    assert [(n["index"], n["node_id"], n["status"]) for n in body["node_executions"]] == [
        (1, "start", "completed"), (2, "memory", "completed"), (3, "retrieval", "skipped"),
        (4, "model", "completed"), (5, "tools", "completed"), (6, "model", "completed"), (7, "end", "completed"),
    ]
    assert set(body["node_executions"][0]) == {
        "index", "node_id", "node_type", "status", "started_at", "completed_at", "duration_ms", "prompt_tokens",
        "completion_tokens", "total_tokens", "cost", "llm_calls", "tool_calls", "error_message", "output"}
    (tool,) = body["tool_call_log"]
    assert (tool["tool"], tool["arguments"], tool["result"], tool["ok"], tool["node_id"]) == (
        "calculator", {"expression": "12*7"}, "84", True, "tools")
    assert [(c["node_id"], c["node_index"]) for c in body["llm_call_log"]] == [("model", 4), ("model", 6)]
    assert (body["llm_calls"], body["tool_calls"]) == (2, 1)  # the counts, as in the list
    assert sum(c["total_tokens"] for c in body["llm_call_log"]) == body["total_tokens"]
    assert sum(Decimal(n["cost"]) for n in body["node_executions"]) == Decimal(body["cost"])
    call = LLMCall.objects.filter(execution_id=execution_id).order_by("id").first()
    assert body["llm_call_log"][0]["cost"] == str(call.cost)
    assert {(c["model"], c["requested_model"], c["unpriced"]) for c in body["llm_call_log"]} == {
        ("local-echo-1", "local-echo-1", False)}


@pytest.mark.django_db
def test_bob_gets_404_for_alices_execution_everywhere(api, bob_api, alice):
    execution = execution_create(ExecutionRequest(owner=alice, graph=LINEAR))

    for path in (f"{URL}{execution.pk}/", f"{URL}{execution.pk}/events/"):
        assert_error(bob_api.get(path), 404, "not_found")
        assert_error(bob_api.get(path, HTTP_ACCEPT="text/event-stream"), 404, "not_found")
    assert_error(bob_api.post(f"{URL}{execution.pk}/cancel/"), 404, "not_found")
    execution.refresh_from_db()
    assert (execution.status, execution.cancel_requested) == ("pending", False)
    assert_error(api.get(f"{URL}not-a-uuid/"), 404, "not_found")
    assert_error(api.get(f"{URL}{uuid.uuid4()}/"), 404, "not_found")


# --- cancel ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_cancelling_a_pending_run_ends_it(api, alice):
    execution = execution_create(ExecutionRequest(owner=alice, graph=LINEAR))

    response = api.post(f"{URL}{execution.pk}/cancel/")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == EXECUTION_FIELDS
    assert (body["status"], body["cancel_requested"], body["error_type"]) == ("cancelled", True, "cancelled")
    assert list(ExecutionEvent.objects.filter(execution=execution).values_list("event", flat=True)) == [
        "workflow_cancelled"]
    assert execution_run(execution_id=execution.pk).status == "cancelled"  # a worker will not start it


@pytest.mark.django_db
def test_cancelling_a_finished_run_is_a_409(api):
    execution_id = api.post(URL, {"graph": LINEAR}).json()["execution"]["id"]
    assert_error(api.post(f"{URL}{execution_id}/cancel/"), 409, "not_cancellable")
    assert WorkflowExecution.objects.get(pk=execution_id).status == "completed"


# --- errors ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_unexpected_error_is_a_json_500(api, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("workflows.api.views.execution_list", broken)
    details = assert_error(api.get(URL), 500, "server_error")
    assert details == []


@pytest.mark.django_db
def test_a_wrong_method_is_a_405_in_the_error_shape(api):
    assert_error(api.delete(URL), 405, "method_not_allowed")


@pytest.mark.django_db
def test_malformed_json_is_a_400_parse_error(api):
    assert_error(api.post(URL, "{not json", content_type="application/json"), 400, "parse_error")


@pytest.mark.django_db
def test_the_openapi_schema_documents_the_api(api):
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/executions/", "/api/v1/executions/{id}/events/", "/api/v1/chat/",
            "/api/v1/conversations/{id}/messages/", "/api/v1/auth/token/"} <= set(paths)
    assert api.get("/api/v1/docs/").status_code == 200
