"""The one error shape on every endpoint: `?ordering=` with an unknown field is a 400 on every list, and
`details` is always a list of {path, code, message}."""
import pytest

from knowledge.services import collection_create
from tests.api.conftest import assert_error, row_counts
from tests.factories import ConversationFactory

SCHEMA = "/api/v1/schema/"


def ordered_lists(api) -> list[str]:
    """Every GET the schema says takes ?ordering= (the lists), as the OpenAPI schema names them."""
    schema = api.get(SCHEMA, HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return sorted(path for path, item in schema["paths"].items()
                  if any(p["name"] == "ordering" for p in item.get("get", {}).get("parameters", [])))


@pytest.mark.django_db
def test_an_unknown_ordering_field_is_a_400_on_every_list(api, alice):
    conversation = ConversationFactory(owner=alice)
    collection = collection_create(owner=alice, name="manuals", embedding_model="local/local-embed-1")
    paths = ordered_lists(api)
    assert {"/api/v1/executions/", "/api/v1/conversations/", "/api/v1/audit/events/",
            "/api/v1/analytics/templates/", "/api/v1/pricing/", "/api/v1/collections/{id}/documents/"} <= set(paths)
    for path in paths:
        parent = collection if path.startswith("/api/v1/collections/") else conversation  # the list's owner's
        url = path.replace("{id}", str(parent.pk)).replace("{conversation_id}", str(conversation.pk))
        details = assert_error(api.get(url, {"ordering": "-password"}), 400, "validation_error")
        assert [(d["path"], d["code"]) for d in details] == [("ordering", "invalid_choice")], (path, details)
        assert "'password'" in details[0]["message"]
    # one unknown field among known ones is still a 400, not a silently partial ordering
    assert_error(api.get("/api/v1/executions/", {"ordering": "created_at,nope"}), 400, "validation_error")


@pytest.mark.django_db
def test_a_known_ordering_field_still_orders(api, alice):
    for title in ("b", "a", "c"):
        ConversationFactory(owner=alice, title=title)
    response = api.get("/api/v1/conversations/", {"ordering": "-created_at"})
    assert response.status_code == 200
    assert [c["title"] for c in response.json()["results"]] == ["c", "a", "b"]


@pytest.mark.django_db
def test_the_schema_names_the_fields_a_list_orders_by(api):
    schema = api.get(SCHEMA, HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    [ordering] = [p for p in schema["paths"]["/api/v1/executions/"]["get"]["parameters"] if p["name"] == "ordering"]
    assert "total_tokens" in ordering["description"] and "400" in ordering["description"]
    error = schema["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["properties"]["details"]["items"]["required"] == ["path", "code", "message"]


@pytest.mark.django_db
def test_a_bad_filter_value_names_the_parameter(api):
    details = assert_error(api.get("/api/v1/executions/", {"status": "sideways"}), 400, "validation_error")
    assert [(d["path"], d["code"]) for d in details] == [("status", "invalid_choice")]


@pytest.mark.django_db
def test_serializer_field_errors_are_listed_with_their_paths(api):
    before = row_counts()
    details = assert_error(api.post("/api/v1/chat/", {"message": "hi", "temperature": 9, "background": "x"},
                                    format="json"), 400, "validation_error")
    assert {d["path"] for d in details} >= {"background"}
    assert row_counts() == before


@pytest.mark.django_db
def test_nested_errors_keep_their_full_path(api):
    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "end"}]}
    details = assert_error(api.post("/api/v1/executions/", {"graph": graph, "config": {"temperature": 7}},
                                    format="json"), 400, "validation_error")
    assert details == [{"path": "config.temperature", "code": "out_of_range",
                        "message": details[0]["message"]}]


@pytest.mark.django_db
def test_a_not_found_has_an_empty_list_of_details(api):
    assert assert_error(api.get("/api/v1/executions/not-a-uuid/"), 404, "not_found") == []


def test_item_13_a_value_a_model_field_refuses_is_a_400_in_the_one_shape_not_a_500():
    """What a lookup raises for an id its field refuses (Django's ValidationError), should a view pass one
    unparsed, is the caller's bad input."""
    from django.core.exceptions import ValidationError

    from core.api.exceptions import api_exception_handler

    response = api_exception_handler(ValidationError("“x” is not a valid UUID.", code="invalid"), {})

    assert response.status_code == 400
    assert response.data["error"]["code"] == "validation_error"
    assert [item["message"] for item in response.data["error"]["details"]] == ["“x” is not a valid UUID."]


@pytest.mark.django_db
def test_a_filter_by_another_users_object_answers_as_one_nobody_has(api, bob_api):
    """A list filtered by an object's id: bob's and an id nobody has both list nothing (another user's object is
    never confirmed to exist: bob's was a 200 and the other a 400 invalid_choice); a malformed id is a 400 naming
    the filter; the user's own still filters."""
    bobs_turn = bob_api.post("/api/v1/chat/", {"message": "hi"}, format="json").json()
    definition = bob_api.post("/api/v1/workflows/definitions/", {"name": "d", "nodes": [
        {"id": "start", "type": "start"}, {"id": "end", "type": "end"}], "edges": [{"source": "start", "target": "end"}]},
        format="json").json()["id"]
    schedule = bob_api.post("/api/v1/schedules/", {"name": "s", "template": "summarize", "cron": "0 0 1 1 *",
                                                   "input": {"message": "x"}}, format="json").json()["id"]
    dataset = bob_api.post("/api/v1/datasets/", {"name": "d"}, format="json").json()["id"]
    own = api.post("/api/v1/chat/", {"message": "hi"}, format="json").json()
    messages = f"/api/v1/conversations/{own['conversation']['id']}/messages/"
    bobs = [("/api/v1/executions/", "conversation", bobs_turn["conversation"]["id"]),
            ("/api/v1/executions/", "definition", definition), ("/api/v1/executions/", "schedule", schedule),
            ("/api/v1/schedules/", "definition", definition), ("/api/v1/experiments/", "dataset", dataset),
            ("/api/v1/scores/", "execution", bobs_turn["execution"]["id"]),
            ("/api/v1/scores/", "message", bobs_turn["messages"][1]["id"]),
            (messages, "execution", bobs_turn["execution"]["id"])]

    for path, name, bobs_id in bobs:
        for value in (bobs_id, "00000000-0000-0000-0000-000000000000"):
            response = api.get(path, {name: value})
            assert (response.status_code, response.json()["count"]) == (200, 0), (path, name, response.content)
        details = assert_error(api.get(path, {name: "nope"}), 400, "validation_error")
        assert [d["path"] for d in details] == [name], (path, details)
    assert api.get("/api/v1/executions/", {"conversation": own["conversation"]["id"]}).json()["count"] == 1
    assert api.get(messages, {"execution": own["execution"]["id"]}).json()["count"] == 2
