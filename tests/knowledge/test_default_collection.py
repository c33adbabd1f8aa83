"""Issue 45, existing Documents (/api/v1/documents/) keep working and are searched by meaning: each user's default
collection holds them, made by a data migration for the Documents already there (rows only; the vectors are the
ingestion job's), and kept in step as Documents are made and deleted."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from conversations.models import Document
from knowledge.defaults import DEFAULT_COLLECTION_NAME, queued_documents_enqueue
from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.tasks import document_ingest_task
from tests.knowledge.test_collections_api import api_for

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
