"""A document deleted while it is being embedded, through a real server (its request) and the ingestion job: the
POST that added it answers 409 (`document_deleted`), the job ends `gone`, no chunk of it is left, and the
embedding already made stays counted. The upstream (the OpenAI stub) answers the document's embedding slowly, so
the delete lands while the document is `processing`."""
import threading
import time
from decimal import Decimal

import httpx
import pytest

from knowledge.models import Chunk, CollectionDocument
from knowledge.tasks import document_ingest_task
from tests.analytics.test_usage_concurrency import in_thread
from tests.factories import ApiTokenFactory, ModelPriceFactory
from workflows.models import LLMCall

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "text-embedding-3-small"
SLOW_S = 3.0


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
