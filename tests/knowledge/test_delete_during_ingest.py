"""A document deleted while it is being embedded, through a real server (its request) and the ingestion job: the
POST that added it answers 409 (`document_deleted`), the job ends `gone`, no chunk of it is left, and the
embedding already made stays counted. The upstream (the OpenAI stub) answers the document's embedding slowly, so
the delete lands while the document is `processing`.

A document of many batches deleted (alone, or with its collection, or while its collection is re-embedded) as its
first batch is at the upstream (held there until the delete has answered) is embedded no further: its other
batches cost nothing."""
import threading
import time
from decimal import Decimal

import httpx
import pytest

from django.core.files.uploadedfile import SimpleUploadedFile
from django_q.models import Task

from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.tasks import document_ingest_task
from tests.analytics.test_usage_concurrency import in_thread
from tests.factories import ApiTokenFactory, ModelPriceFactory
from tests.knowledge import test_concurrent_changes as concurrent
from tests.knowledge.test_collections_api import api_for, collection_made
from workflows.models import LLMCall

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "text-embedding-3-small"
SLOW_S = 3.0
# Twelve paragraphs of about 20 tokens: at a chunk size of 20, two chunks each, twelve batches of two.
LONG = "\n\n".join(f"Step {step}: unplug the kettle, let it cool, then wipe the seal and the element dry." for step in
                   range(12))


@pytest.fixture
def upstream(openai_server):
    """The stub as both processes' upstream, priced; the collection's probe of the vectors' size answered."""
    ModelPriceFactory(provider="openai", model_pattern=MODEL, input_per_million=Decimal("0.02"),
                      output_per_million=Decimal("0"))
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})
    return openai_server


def deleted_while_processing(client: httpx.Client, documents_url: str, upstream) -> None:
    """Delete the document once it is `processing` and its embedding request has reached the upstream (which
    answers it slowly): deleted before that, it would never be embedded, and nothing would be spent."""
    deadline = time.monotonic() + 20
    while True:
        listed = client.get(documents_url).json()["results"]
        if listed and listed[0]["status"] == "processing" and upstream.pending == 0:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.05)
    assert client.delete(f"{documents_url}{listed[0]['id']}/").status_code == 204


def test_a_document_deleted_while_its_post_embeds_it_is_a_409_without_chunks(alice, upstream, shared_daphne_server):
    server = shared_daphne_server(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="sk-test-not-a-real-key")
    token = ApiTokenFactory(user=alice, scopes=["knowledge"]).key
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    collection = client.post("/api/v1/collections/", json={"name": "manuals", "embedding_model": f"openai/{MODEL}"})
    assert collection.status_code == 201, collection.text
    documents_url = f"/api/v1/collections/{collection.json()['id']}/documents/"
    upstream.reply(usage={"prompt_tokens": 7, "total_tokens": 7}, delay_s=SLOW_S)
    answers = []
    adding = threading.Thread(target=lambda: answers.append(
        client.post(documents_url, json={"title": "slow", "text": "Kettles boil water."})))
    adding.start()

    deleted_while_processing(client, documents_url, upstream)
    adding.join()

    (answer,) = answers
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "document_deleted"), answer.text
    assert not CollectionDocument.objects.exists() and not Chunk.objects.exists()
    call = LLMCall.objects.filter(kind="embedding").order_by("id").last()
    assert (call.prompt_tokens, call.execution.status) == (7, "completed")  # the embedding spent, counted
    assert call.execution.input_data["variables"]["purpose"]["collection"] == collection.json()["id"]


def test_a_document_deleted_while_its_job_embeds_it_is_gone_without_chunks(alice, upstream, shared_daphne_server):
    server = shared_daphne_server(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="sk-test-not-a-real-key")
    token = ApiTokenFactory(user=alice, scopes=["knowledge"]).key
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    collection = client.post("/api/v1/collections/", json={"name": "manuals", "embedding_model": f"openai/{MODEL}"})
    documents_url = f"/api/v1/collections/{collection.json()['id']}/documents/"
    queued = client.post(documents_url, files={"file": ("a.txt", b"Kettles boil water.", "text/plain")}).json()
    upstream.reply(usage={"prompt_tokens": 7, "total_tokens": 7}, delay_s=SLOW_S)
    outcome = []
    job = threading.Thread(target=in_thread(lambda: outcome.append(document_ingest_task(queued["id"]))))
    job.start()

    deleted_while_processing(client, documents_url, upstream)
    job.join()

    assert outcome == ["gone"]
    assert not CollectionDocument.objects.exists() and not Chunk.objects.exists()
    assert LLMCall.objects.filter(kind="embedding", prompt_tokens=7, execution__status="completed").count() == 1


@pytest.fixture
def held_first_batch(alice, openai_server, settings):
    """Alice's collection on the stub's model, chunked small, two chunks a batch; the next embedding request (a
    document's first batch) is held at the upstream until the test releases it, every later one answered."""
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 2
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})  # the collection's probe of the vectors' size
    collection = collection_made(api_for(alice), embedding_model=f"openai/{MODEL}", chunk_size=20, chunk_overlap=0)
    openai_server.reply(usage={"prompt_tokens": 7, "total_tokens": 7}, hold=True)
    openai_server.always(usage={"prompt_tokens": 7, "total_tokens": 7})
    return collection


def embeddings_of(document_id: str):
    return LLMCall.objects.filter(kind="embedding", execution__input_data__variables__purpose__document=document_id)


def processing_document(api, collection, upstream) -> dict:
    """The collection's one document, once its first batch is at the upstream."""
    concurrent.upstream_has_taken_every_reply(upstream)
    (listed,) = api.get(f"/api/v1/collections/{collection['id']}/documents/").json()["results"]
    assert listed["status"] == "processing"
    return listed


def test_a_collection_deleted_after_its_documents_first_batch_stops_the_job_embedding_the_rest(
        alice, openai_server, held_first_batch):
    collection, api = held_first_batch, api_for(alice)
    uploading, answers = concurrent.in_thread(lambda: api_for(alice).post(
        f"/api/v1/collections/{collection['id']}/documents/",
        {"file": SimpleUploadedFile("long.txt", LONG.encode(), content_type="text/plain")}, format="multipart"))
    document = processing_document(api, collection, openai_server)

    deleted = api.delete(f"/api/v1/collections/{collection['id']}/")
    openai_server.release()
    uploading.join()

    assert deleted.status_code == 204 and answers[0].status_code == 202
    job = Task.objects.get(name=f"document-{document['id']}")
    assert (job.success, job.result) == (True, "gone")
    assert embeddings_of(document["id"]).count() == 1  # the batch under way as it was deleted, of twelve
    assert not Collection.objects.exists() and not CollectionDocument.objects.exists() and not Chunk.objects.exists()
    concurrent.reconciled()


def test_a_document_deleted_after_its_first_batch_is_a_409_and_embedded_no_further(
        alice, openai_server, held_first_batch):
    collection, api = held_first_batch, api_for(alice)
    adding, answers = concurrent.in_thread(lambda: api_for(alice).post(
        f"/api/v1/collections/{collection['id']}/documents/", {"title": "long", "text": LONG}, format="json"))
    document = processing_document(api, collection, openai_server)

    deleted = api.delete(f"/api/v1/collections/{collection['id']}/documents/{document['id']}/")
    openai_server.release()
    adding.join()

    assert deleted.status_code == 204
    assert (answers[0].status_code, answers[0].json()["error"]["code"]) == (409, "document_deleted")
    assert embeddings_of(document["id"]).count() == 1
    assert not CollectionDocument.objects.exists() and not Chunk.objects.exists()
    concurrent.reconciled()


def test_a_document_deleted_after_its_first_batch_of_a_reembedding_is_embedded_no_further(
        alice, openai_server, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 2
    openai_server.always(usage={"prompt_tokens": 4, "total_tokens": 4})
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)
    documents = f"/api/v1/collections/{collection['id']}/documents/"
    gone = api.post(documents, {"title": "long", "text": LONG}, format="json").json()
    kept = api.post(documents, {"title": "short", "text": "Kettles boil water."}, format="json").json()
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})  # the new model's size, probed
    openai_server.reply(usage={"prompt_tokens": 4, "total_tokens": 4}, hold=True)  # the long one's first batch
    changing, answers = concurrent.in_thread(lambda: api_for(alice).patch(
        f"/api/v1/collections/{collection['id']}/", {"embedding_model": concurrent.NEW_MODEL}, format="json"))
    concurrent.upstream_has_taken_every_reply(openai_server)

    deleted = api.delete(f"{documents}{gone['id']}/")
    openai_server.release()
    changing.join()

    assert deleted.status_code == 204 and answers[0].status_code == 200, answers[0].content
    assert concurrent.reembedding_runs().filter(input_data__variables__purpose__document=gone["id"]).count() == 1
    remaining = CollectionDocument.objects.get()
    assert str(remaining.pk) == kept["id"] and remaining.status == "ready"
    assert remaining.chunk_count == Chunk.objects.count() > 0  # nothing of the deleted one, nothing left staged
    assert set(remaining.chunks.values_list("dimensions", flat=True)) == {3}
    concurrent.reconciled()
