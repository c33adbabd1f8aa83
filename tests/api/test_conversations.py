"""Conversation create / update / delete, and list filters (reads and aggregates are in test_chat.py)."""
import pytest

from conversations.models import Conversation, Message
from tests.api.conftest import assert_error, error_fields
from tests.invariants import assert_i1_everywhere
from workflows.models import RUN_IN_PROGRESS, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create

URL = "/api/v1/conversations/"
pytestmark = pytest.mark.django_db


def chat(api, text="hello", conversation_id=None) -> dict:
    body = {"message": text, **({"conversation_id": conversation_id} if conversation_id else {})}
    response = api.post("/api/v1/chat/", body)
    assert response.status_code == 201, response.content
    return response.json()


def test_it_creates_an_empty_conversation(api, alice):
    response = api.post(URL, {"title": "Plans", "metadata": {"project": "x"}})

    assert response.status_code == 201
    body = response.json()
    conversation = Conversation.objects.get(pk=body["id"])
    assert conversation.owner == alice and conversation.title == "Plans"
    assert conversation.metadata == {"project": "x"}
    assert body["message_count"] == 0 and body["total_cost"] == "0.00000000" and body["status"] == "active"


def test_a_new_conversation_can_be_continued_by_chat(api):
    conversation_id = api.post(URL, {"title": "T"}).json()["id"]
    turn = chat(api, conversation_id=conversation_id)
    assert turn["conversation"]["id"] == conversation_id and turn["conversation"]["message_count"] == 2


def test_bad_input_is_a_400_and_no_row(api):
    for body in ({"status": "deleted"}, {"title": "x" * 256}, {"metadata": [1, 2]}):
        details = assert_error(api.post(URL, body, format="json"), 400, "validation_error")
        assert {d["path"] for d in details} == set(body)
    assert Conversation.objects.count() == 0


def test_patch_changes_title_status_and_metadata_but_never_aggregates(api):
    turn = chat(api)
    conversation_id = turn["conversation"]["id"]
    refused = api.patch(f"{URL}{conversation_id}/", {"title": "Renamed", "total_tokens": 0, "message_count": 99})
    assert error_fields(assert_error(refused, 400, "validation_error")) == {"total_tokens", "message_count"}

    response = api.patch(f"{URL}{conversation_id}/", {"title": "Renamed", "status": "archived"})
    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["status"]) == ("Renamed", "archived")
    assert body["message_count"] == 2 and body["total_tokens"] == turn["conversation"]["total_tokens"] > 0
    assert_i1_everywhere()


def test_patch_with_a_bad_status_is_a_400_and_changes_nothing(api):
    conversation_id = api.post(URL, {"title": "Keep"}).json()["id"]
    assert_error(api.patch(f"{URL}{conversation_id}/", {"title": "New", "status": "gone"}), 400, "validation_error")
    assert Conversation.objects.get(pk=conversation_id).title == "Keep"


def test_delete_removes_the_conversation_and_its_messages_and_keeps_the_runs(api):
    turn = chat(api)
    conversation_id = turn["conversation"]["id"]
    other = chat(api, "another")["conversation"]["id"]

    assert api.delete(f"{URL}{conversation_id}/").status_code == 204

    assert not Conversation.objects.filter(pk=conversation_id).exists()
    assert not Message.objects.filter(conversation_id=conversation_id).exists()
    execution = WorkflowExecution.objects.get(pk=turn["execution"]["id"])
    assert execution.conversation_id is None and execution.total_tokens == turn["execution"]["total_tokens"]
    assert Message.objects.filter(conversation_id=other).count() == 2
    assert api.get(f"{URL}{conversation_id}/").status_code == 404
    assert_i1_everywhere()


def test_a_conversation_with_a_run_in_progress_cannot_be_deleted(api, alice):
    conversation_id = chat(api)["conversation"]["id"]
    execution_create(ChatRequest(owner=alice, message="later", conversation_id=conversation_id, mode="background"))

    assert_error(api.delete(f"{URL}{conversation_id}/"), 409, "conflict")
    assert Message.objects.filter(conversation_id=conversation_id).count() == 3
    assert_i1_everywhere()


def test_it_knows_every_status_of_a_run_not_yet_ended():
    # conversations reads runs' statuses by name (it may not import workflows): they must stay the same.
    assert set(RUN_IN_PROGRESS) == set(WorkflowExecution.Status.values) - set(WorkflowExecution.TERMINAL)


def test_bob_can_neither_change_nor_delete_alices_conversation(api, bob_api):
    conversation_id = api.post(URL, {"title": "Mine"}).json()["id"]

    assert_error(bob_api.patch(f"{URL}{conversation_id}/", {"title": "Bob's"}), 404, "not_found")
    assert_error(bob_api.delete(f"{URL}{conversation_id}/"), 404, "not_found")
    assert_error(bob_api.get(f"{URL}{conversation_id}/messages/"), 404, "not_found")
    assert bob_api.get(URL).json()["count"] == 0
    assert Conversation.objects.get(pk=conversation_id).title == "Mine"


def test_a_non_uuid_id_is_a_404(api):
    assert_error(api.get(f"{URL}not-a-uuid/"), 404, "not_found")


def test_the_list_filters_by_status_title_and_dates_and_orders(api):
    first = api.post(URL, {"title": "Alpha plans"}).json()
    api.post(URL, {"title": "Beta", "status": "archived"})
    chat(api, "a turn")

    assert [c["title"] for c in api.get(URL, {"status": "archived"}).json()["results"]] == ["Beta"]
    assert [c["id"] for c in api.get(URL, {"title": "alpha"}).json()["results"]] == [first["id"]]
    assert api.get(URL, {"created_after": first["created_at"]}).json()["count"] == 3
    assert api.get(URL, {"created_before": first["created_at"]}).json()["count"] == 0
    by_tokens = api.get(URL, {"ordering": "-total_tokens"}).json()["results"]
    assert by_tokens[0]["total_tokens"] > 0 and by_tokens[-1]["total_tokens"] == 0
    assert_error(api.get(URL, {"created_after": "yesterday"}), 400, "validation_error")


def test_messages_filter_by_role(api):
    conversation_id = chat(api)["conversation"]["id"]
    rows = api.get(f"{URL}{conversation_id}/messages/", {"role": "assistant"}).json()["results"]
    assert [m["role"] for m in rows] == ["assistant"]
    newest_first = api.get(f"{URL}{conversation_id}/messages/", {"ordering": "-sequence"}).json()["results"]
    assert [m["sequence"] for m in newest_first] == [2, 1]


def test_date_filters_take_any_iso_offset_and_refuse_unrepresentable_times(api):
    api.post(URL, {"title": "T"})
    # PostgreSQL refuses offsets beyond ±15:59; the filter compares in UTC, so these are fine everywhere.
    assert api.get(URL, {"created_after": "0072-01-31T01:47:40.5+21:22"}).json()["count"] == 1
    assert api.get(URL, {"created_before": "5576-01-07T09:26:51+22:59"}).json()["count"] == 1
    assert_error(api.get(URL, {"created_after": "9999-12-31T23:59:59-23:00"}), 400, "validation_error")
