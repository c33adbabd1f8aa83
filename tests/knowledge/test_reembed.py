"""Issue 45, a collection's embedding model changed (PATCH): every document re-embedded as a job (knowledge.reembed,
its task called here as the worker calls it), the chunks replaced whole or not at all, and searches answered from the
old vectors until the swap."""
import pytest

from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.reembed import reembed_stage, reembed_swap
from knowledge.tasks import collection_reembed_task
from tests.knowledge.test_collections_api import LEXICAL, TEXT, api_for, collection_made
from workflows.models import LLMCall

pytestmark = pytest.mark.django_db

NEW_MODEL = "openai/text-embedding-3-small"
OTHER = "Descaling: vinegar and water dissolve limescale.\n\nRinse twice before boiling again."


@pytest.fixture
def two_documents(alice, openai_server, django_capture_on_commit_callbacks):
    """Alice's collection on the lexical model with two ready documents; the stub answers every embedding."""
    openai_server.always(usage={"prompt_tokens": 4, "total_tokens": 4})
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)
    for title, text in (("kettle", TEXT), ("descaling", OTHER)):
        api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": title, "text": text}, format="json")
    return api, collection


def changed(api, collection, capture, model=NEW_MODEL):
    with capture() as enqueued:
        answer = api.patch(f"/api/v1/collections/{collection['id']}/", {"embedding_model": model}, format="json")
    return answer, enqueued


def chunk_rows(collection_id):
    return sorted(Chunk.objects.filter(collection_id=collection_id).values_list("id", "dimensions"))


def test_reembed_on_model_change_replaces_every_documents_chunks_with_the_new_models(
        alice, two_documents, django_capture_on_commit_callbacks):
    api, collection = two_documents
    old = chunk_rows(collection["id"])

    answer, enqueued = changed(api, collection, django_capture_on_commit_callbacks)

    assert answer.status_code == 200, answer.json()
    shown = answer.json()
    assert (shown["embedding_model"], shown["dimensions"], shown["pending_embedding_model"]) == (LEXICAL, 256,
                                                                                                  NEW_MODEL)
    assert chunk_rows(collection["id"]) == old  # nothing changed before the job
    assert any(callback.__qualname__.startswith("collection_update") for callback in enqueued)  # its job queued
    again = api.patch(f"/api/v1/collections/{collection['id']}/", {"embedding_model": LEXICAL}, format="json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "reembedding")

    assert collection_reembed_task(collection["id"]) == NEW_MODEL

    stored = Collection.objects.get(pk=collection["id"])
    assert (stored.embedding_model, stored.dimensions, stored.pending_embedding_model) == (NEW_MODEL, 3, "")
    new = chunk_rows(collection["id"])
    assert {dimensions for _, dimensions in new} == {3} and not set(new) & set(old)
    assert not Chunk.objects.filter(collection__isnull=True).exists()
    for document in CollectionDocument.objects.all():
        assert (document.status, document.chunk_count) == ("ready", document.chunks.count())
    reembedding = LLMCall.objects.filter(execution__owner=alice, kind="embedding", provider="openai",
                                         requested_model="text-embedding-3-small")
    assert reembedding.count() == 3  # the probe of the vectors' size, a request for each document's chunks
    hits = api.post(f"/api/v1/collections/{collection['id']}/search/", {"query": "limescale", "mode": "vector"},
                    format="json")
    assert hits.status_code == 200 and hits.json()["results"]


def test_reembed_search_answers_the_old_vectors_until_the_swap(two_documents, django_capture_on_commit_callbacks):
    api, collection = two_documents
    search = f"/api/v1/collections/{collection['id']}/search/"
    before = api.post(search, {"query": "cracked seal", "mode": "vector"}, format="json").json()["results"]
    changed(api, collection, django_capture_on_commit_callbacks)
    pending = Collection.objects.get(pk=collection["id"])

    counts = reembed_stage(pending)

    assert Chunk.objects.filter(collection__isnull=True).count() == sum(counts.values()) > 0  # staged, unseen
    assert api.post(search, {"query": "cracked seal", "mode": "vector"}, format="json").json()["results"] == before
    reembed_swap(pending, counts)
    after = api.post(search, {"query": "cracked seal", "mode": "vector"}, format="json").json()["results"]
    assert {hit["chunk_id"] for hit in after}.isdisjoint(hit["chunk_id"] for hit in before)


def test_reembed_failing_midway_keeps_the_old_model_and_chunks_whole(
        two_documents, openai_server, django_capture_on_commit_callbacks, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 1
    api, collection = two_documents
    old = chunk_rows(collection["id"])
    changed(api, collection, django_capture_on_commit_callbacks)
    openai_server.reply(usage={"prompt_tokens": 4, "total_tokens": 4})  # the first chunk's request answers ...
    openai_server.always(status=500)  # ... then the provider fails

    assert collection_reembed_task(collection["id"]) == LEXICAL

    stored = Collection.objects.get(pk=collection["id"])
    assert (stored.embedding_model, stored.dimensions, stored.pending_embedding_model) == (LEXICAL, 256, "")
    assert stored.reembed_error.startswith("embeddings_failed")
    assert chunk_rows(collection["id"]) == old and not Chunk.objects.filter(collection__isnull=True).exists()
    assert api.get(f"/api/v1/collections/{collection['id']}/").json()["reembed_error"] == stored.reembed_error


def test_reembed_to_a_model_that_reads_less_than_the_chunk_size_is_400(alice):
    api = api_for(alice)
    collection = collection_made(api, chunk_size=300, chunk_overlap=0)

    answer = api.patch(f"/api/v1/collections/{collection['id']}/", {"embedding_model": "local/all-MiniLM-L6-v2"},
                       format="json")

    assert answer.status_code == 400 and answer.json()["error"]["details"][0]["path"] == "embedding_model"
    assert Collection.objects.get(pk=collection["id"]).pending_embedding_model == ""
