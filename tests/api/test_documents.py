"""Documents for retrieval: create, list, read, delete; owner-scoped; and a retrieval run finds them."""
import pytest

from conversations.models import Document
from tests.api.conftest import assert_error

URL = "/api/v1/documents/"
pytestmark = pytest.mark.django_db


def test_it_creates_lists_reads_and_deletes_a_document(api, alice):
    response = api.post(URL, {"title": "Refunds", "content": "Refunds take 14 days.", "metadata": {"v": 1}})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "title", "content", "metadata", "created_at"}
    assert Document.objects.get(pk=body["id"]).owner == alice

    assert api.get(URL).json()["results"] == [body]
    assert api.get(f"{URL}{body['id']}/").json() == body
    assert api.delete(f"{URL}{body['id']}/").status_code == 204
    assert not Document.objects.exists()
    assert_error(api.get(f"{URL}{body['id']}/"), 404, "not_found")


def test_bad_input_is_a_400_naming_the_field_and_no_row(api):
    cases = [({"title": "", "content": "x"}, "title"), ({"title": "t", "content": "   "}, "content"),
             ({"content": "x"}, "title"), ({"title": "t" * 256, "content": "x"}, "title"),
             ({"title": "t", "content": "x", "metadata": "nope"}, "metadata")]
    for body, field in cases:
        details = assert_error(api.post(URL, body, format="json"), 400, "validation_error")
        assert field in {d["path"] for d in details}, (body, details)
    assert not Document.objects.exists()


def test_documents_are_the_owners_only(api, bob_api):
    document_id = api.post(URL, {"title": "Secret", "content": "alice only"}).json()["id"]

    assert bob_api.get(URL).json()["count"] == 0
    assert_error(bob_api.get(f"{URL}{document_id}/"), 404, "not_found")
    assert_error(bob_api.delete(f"{URL}{document_id}/"), 404, "not_found")
    assert Document.objects.filter(pk=document_id).exists()


def test_the_list_filters_by_title_and_is_paginated(api):
    for index in range(25):
        api.post(URL, {"title": f"Doc {index}", "content": "text"})
    api.post(URL, {"title": "Shipping policy", "content": "We ship daily."})

    assert [d["title"] for d in api.get(URL, {"title": "shipping"}).json()["results"]] == ["Shipping policy"]
    page = api.get(URL, {"page_size": 10, "ordering": "title"}).json()
    assert page["count"] == 26 and len(page["results"]) == 10 and page["next"]
    assert page["results"][0]["title"] == "Doc 0"


def test_a_retrieval_run_uses_the_owners_documents(api, bob_api):
    mine = api.post(URL, {"title": "Refund policy", "content": "Refunds are paid within 14 days."}).json()["id"]
    bobs = bob_api.post(URL, {"title": "Bob's refund notes", "content": "bob refund secret"}).json()["id"]

    response = api.post("/api/v1/executions/", {"template": "research_assistant",
                                                "input": {"message": "How long do refunds take?"}}, format="json")

    assert response.status_code == 201, response.content
    detail = api.get(f"/api/v1/executions/{response.json()['execution']['id']}/").json()
    retrieval = [n for n in detail["node_executions"] if n["node_type"] == "retrieval"]
    assert retrieval and retrieval[0]["output"]["documents"] == [mine]
    assert bobs not in str(detail)
