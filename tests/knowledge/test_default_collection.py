"""Issue 45, existing Documents (/api/v1/documents/) keep working and are searched by meaning: each user's default
collection holds them, made by a data migration for the Documents already there (rows only; the vectors are the
ingestion job's), and kept in step as Documents are made and deleted."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from conversations.models import Document
from conversations.services import document_create
from knowledge.defaults import DEFAULT_COLLECTION_NAME, queued_documents_enqueue
from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.tasks import document_ingest_task
from tests.factories import ApiTokenFactory, BudgetFactory
from tests.knowledge.test_collections_api import api_for
from workflows.models import LLMCall

BEFORE = [("knowledge", "0005_uploads_and_reembedding")]
AFTER = [("knowledge", "0006_default_collections_of_documents")]


@pytest.mark.django_db(transaction=True)
def test_existing_documents_get_a_default_collection_by_migration_and_vectors_by_the_job(alice, bob,
                                                                                       django_capture_on_commit_callbacks):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        OldDocument = executor.loader.project_state(BEFORE).apps.get_model("conversations", "Document")
        kettle = OldDocument.objects.create(owner_id=alice.pk, title="Kettle", content="A cracked seal leaks water.")
        OldDocument.objects.create(owner_id=alice.pk, title="Copy", content="A cracked seal leaks water.")
        OldDocument.objects.create(owner_id=alice.pk, title="Toaster", content="Crumbs catch fire.")
        executor.loader.build_graph()
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    (collection,) = Collection.objects.all()
    assert (collection.owner_id, collection.name, collection.embedding_model, collection.dimensions) == (
        alice.pk, DEFAULT_COLLECTION_NAME, "local/all-MiniLM-L6-v2", 384)
    mirrored = {d.title: d for d in CollectionDocument.objects.filter(collection=collection)}
    assert sorted(mirrored) == ["Kettle", "Toaster"]  # the same text once
    assert {d.status for d in mirrored.values()} == {"queued"} and not Chunk.objects.exists()
    assert mirrored["Kettle"].source_document_id == kettle.pk
    assert queued_documents_enqueue() == 2

    assert document_ingest_task(str(mirrored["Kettle"].pk)) == "ready"
    assert Chunk.objects.filter(document=mirrored["Kettle"], dimensions=384).exists()
    search = api_for(alice).post(f"/api/v1/collections/{collection.pk}/search/",
                                 {"query": "my kettle drips", "mode": "vector", "k": 1}, format="json")
    assert search.json()["results"][0]["title"] == "Kettle"


@pytest.mark.django_db
def test_documents_api_keeps_working_and_its_documents_join_the_default_collection(alice, api,
                                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as enqueued:
        made = api.post("/api/v1/documents/", {"title": "Kettle", "content": "A cracked seal leaks water."},
                        format="json")

    assert made.status_code == 201 and api.get(f"/api/v1/documents/{made.json()['id']}/").status_code == 200
    mirrored = CollectionDocument.objects.get(source_document_id=made.json()["id"])
    assert (mirrored.collection.name, mirrored.collection.owner, mirrored.status, mirrored.text) == (
        DEFAULT_COLLECTION_NAME, alice, "queued", "A cracked seal leaks water.")
    assert any(callback.__qualname__.startswith("document_enqueue") for callback in enqueued)
    assert api.delete(f"/api/v1/documents/{made.json()['id']}/").status_code == 204
    assert not CollectionDocument.objects.exists() and not Document.objects.exists()


def key_api(user, scopes=("chat", "read", "knowledge")):
    key = ApiTokenFactory(user=user, scopes=list(scopes))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key.key}")
    return key, api


@pytest.mark.django_db
def test_a_documents_mirror_is_embedded_as_the_key_that_added_it_under_its_budget(alice,
                                                                                django_capture_on_commit_callbacks):
    """A Document added with an API key is embedded as that key (its spend, its hard budget), as the same text added
    to a collection with it is: a key whose budget has no room gets its mirror failed, nothing embedded."""
    spender, spender_api = key_api(alice)
    capped, capped_api = key_api(alice)
    BudgetFactory(owner=alice, scope="key", target_id=str(capped.uid), period="total", limit_tokens=1, mode="hard")

    with django_capture_on_commit_callbacks(execute=True):
        spent = spender_api.post("/api/v1/documents/", {"title": "B", "content": "Kettles boil water fast."},
                                 format="json")
    with django_capture_on_commit_callbacks(execute=True):
        refused = capped_api.post("/api/v1/documents/", {"title": "C", "content": "Descale the kettle monthly."},
                                  format="json")

    assert (spent.status_code, refused.status_code) == (201, 201)
    ready = CollectionDocument.objects.get(source_document_id=spent.json()["id"])
    (call,) = LLMCall.objects.all()
    assert ready.status == "ready" and (call.kind, call.execution.api_key) == ("embedding", spender)
    failed = CollectionDocument.objects.get(source_document_id=refused.json()["id"])
    assert (failed.status, failed.chunk_count) == ("failed", 0) and failed.error.startswith("budget_exceeded")


@pytest.mark.django_db
def test_a_mirror_shared_by_documents_of_the_same_text_outlives_the_first(alice, api,
                                                                          django_capture_on_commit_callbacks):
    made = []
    for title in ("Refunds", "Refunds (copy)"):
        with django_capture_on_commit_callbacks(execute=True):
            made.append(api.post("/api/v1/documents/", {"title": title, "content": "Refunds take 14 days."},
                                 format="json").json())
    collection = Collection.objects.get(owner=alice, name=DEFAULT_COLLECTION_NAME)
    search = f"/api/v1/collections/{collection.pk}/search/"

    assert api.delete(f"/api/v1/documents/{made[0]['id']}/").status_code == 204

    (mirrored,) = CollectionDocument.objects.filter(collection=collection)
    assert (str(mirrored.source_document_id), mirrored.title, mirrored.status) == (
        made[1]["id"], "Refunds (copy)", "ready")
    found = api.post(search, {"query": "refund days", "k": 1}, format="json").json()["results"]
    assert [hit["title"] for hit in found] == ["Refunds (copy)"]
    assert api.delete(f"/api/v1/documents/{made[1]['id']}/").status_code == 204
    assert not CollectionDocument.objects.exists() and not Chunk.objects.exists()


@pytest.mark.django_db
def test_a_mirror_is_not_handed_to_a_document_that_has_one(alice, api, django_capture_on_commit_callbacks):
    """After the default collection was renamed, a Document of the same text has a mirror of its own (in the new
    default collection): deleting the first takes its own mirror with it, and the other's stays."""
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post("/api/v1/documents/", {"title": "A", "content": "Refunds take 14 days."}, format="json")
    Collection.objects.filter(owner=alice, name=DEFAULT_COLLECTION_NAME).update(name="old documents")
    with django_capture_on_commit_callbacks(execute=True):
        second = api.post("/api/v1/documents/", {"title": "B", "content": "Refunds take 14 days."}, format="json")

    assert api.delete(f"/api/v1/documents/{first.json()['id']}/").status_code == 204

    (kept,) = CollectionDocument.objects.all()
    assert (str(kept.source_document_id), kept.collection.name) == (second.json()["id"], DEFAULT_COLLECTION_NAME)


@pytest.mark.django_db
def test_a_document_added_and_deleted_in_the_admin_is_mirrored_as_through_the_api(staff, alice, client,
                                                                                   django_capture_on_commit_callbacks):
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=True):
        added = client.post("/admin/conversations/document/add/", {
            "owner": alice.pk, "title": "Kettle", "content": "A cracked seal leaks water.", "metadata": "{}"})

    assert added.status_code == 302, added.content.decode()[:2000]
    (document,) = Document.objects.all()
    mirrored = CollectionDocument.objects.get(source_document=document)
    assert (mirrored.collection.owner, mirrored.status) == (alice, "ready")
    deleted = client.post(f"/admin/conversations/document/{document.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not CollectionDocument.objects.exists() and not Chunk.objects.exists()


@pytest.mark.django_db
def test_a_documents_page_in_the_admin_changes_nothing_search_never_serves_stale_text(staff, alice, bob, client,
                                                                                  django_capture_on_commit_callbacks):
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=True):
        document = document_create(owner=alice, title="Plan", content="The launch code is AARDVARK-7731.")
    page = f"/admin/conversations/document/{document.pk}/change/"

    shown = client.get(page)
    changed = client.post(page, {"owner": bob.pk, "title": "Plan", "content": "The plan was cancelled.",
                                 "metadata": "{}"})

    assert shown.status_code == 200 and 'name="_save"' not in shown.content.decode()  # a view-only page
    assert changed.status_code == 403
    document.refresh_from_db()
    mirrored = CollectionDocument.objects.get(source_document=document)
    assert (document.owner, document.content) == (alice, "The launch code is AARDVARK-7731.")
    assert (mirrored.collection.owner, mirrored.text) == (alice, document.content)
