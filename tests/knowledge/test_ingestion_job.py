"""Issue 45, the ingestion job: its progress on the owner's websocket (/ws/events/, `document_updated`: chunks done
of the total, then `ready`), and once end to end through a real daphne server and a real django-q2 worker."""
import asyncio
import threading
import time
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.test import APIClient

from knowledge.models import Chunk, CollectionDocument
from knowledge.services import collection_create, content_hash
from knowledge.tasks import document_ingest_task, documents_lapsed_requeue_task
from tests.analytics.test_usage_concurrency import in_thread
from tests.factories import ApiTokenFactory
from tests.fixtures_server import start_worker, stop_process
from tests.knowledge.files import pdf_bytes
from tests.knowledge.test_concurrent_changes import upstream_has_taken_every_reply
from tests.knowledge.test_collections_api import LEXICAL, TEXT
from tests.realtime.test_websockets import close_db_connections, connect, token_for  # noqa: F401 - a fixture too

pytestmark = pytest.mark.django_db(transaction=True)


def upload_stored(owner) -> CollectionDocument:
    """A file stored and queued as an upload leaves it (the tests' django-q2 would run its job at once)."""
    collection = collection_create(owner=owner, name="manuals", embedding_model=LEXICAL, chunk_size=20,
                                   chunk_overlap=0)
    return CollectionDocument.objects.create(collection=collection, title="manual", file_name="manual.txt",
                                             content_type="text/plain", file_data=TEXT.encode(),
                                             content_hash=content_hash(TEXT))


uploaded = sync_to_async(upload_stored)


async def test_ingestion_progress_reaches_the_owners_socket_chunk_batch_by_batch(alice, bob, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 2
    document = await uploaded(alice)
    mine = await connect(f"/ws/events/?token={await token_for(alice)}")
    theirs = await connect(f"/ws/events/?token={await token_for(bob)}")

    worker = threading.Thread(target=in_thread(lambda: document_ingest_task(str(document.pk))))
    worker.start()
    await asyncio.to_thread(worker.join)
    updates = []
    while not updates or updates[-1]["status"] == "processing":
        event = await mine.receive_json_from(timeout=10)
        if event["event"] == "document_updated":
            updates.append(event["data"])
    nothing = await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()

    total = updates[-1]["chunks_total"]
    assert total >= 3 and updates[-1]["status"] == "ready" and updates[-1]["chunks_done"] == total
    assert [(u["status"], u["chunks_done"]) for u in updates] == [
        ("processing", 0), *(("processing", min(done, total)) for done in range(2, total + 2, 2)), ("ready", total)]
    assert {u["document_id"] for u in updates} == {str(document.pk)}
    assert {u["collection_id"] for u in updates} == {str(document.collection_id)}
    assert nothing


def test_ingestion_job_runs_in_a_real_worker_after_a_real_upload(alice, shared_daphne_server, tmp_path):
    server = shared_daphne_server()
    headers = {"Authorization": f"Token {ApiTokenFactory(user=alice, scopes=['knowledge']).key}"}
    collection = httpx.post(f"{server.base_url}/api/v1/collections/", headers=headers, timeout=30,
                            json={"name": "manuals", "embedding_model": LEXICAL}).json()
    lines = ["Kettle repairs", "A cracked seal lets water out of the appliance."]
    answer = httpx.post(f"{server.base_url}/api/v1/collections/{collection['id']}/documents/", headers=headers,
                        timeout=30, files={"file": ("manual.pdf", pdf_bytes(lines), "application/pdf")})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"

    worker = start_worker(tmp_path)
    try:
        deadline = time.monotonic() + 60
        while CollectionDocument.objects.get(pk=answer.json()["id"]).status in ("queued", "processing"):
            assert time.monotonic() < deadline, "the worker did not ingest the document"
            time.sleep(0.2)
    finally:
        stop_process(worker)
    document = CollectionDocument.objects.get(pk=answer.json()["id"])
    assert (document.status, document.error) == ("ready", "")
    assert document.chunk_count > 0 and document.text.splitlines() == lines


def left_processing(document: CollectionDocument, *, claimed_s_ago: float) -> None:
    """The document as a job that died with its worker (SIGKILL, or stopped by django-q2 past Q_CLUSTER's timeout)
    leaves it: claimed that long ago, `processing`, no chunk."""
    CollectionDocument.objects.filter(pk=document.pk).update(
        status="processing", updated_at=timezone.now() - timedelta(seconds=claimed_s_ago))


def test_a_job_delivered_again_after_its_worker_died_takes_the_document_up_again(alice):
    """django-q2 delivers again a job whose worker died, once Q_CLUSTER's retry has passed, and document_ingest
    claimed only queued and failed documents: the delivery found it `processing` and did nothing, so it stayed
    `processing` for ever, and the same file added again answered it as it was."""
    document = upload_stored(alice)
    lifetime = django_settings.Q_CLUSTER["timeout"]
    left_processing(document, claimed_s_ago=lifetime - 30)  # a job that may still be running: left to it

    assert document_ingest_task(str(document.pk)) == "processing"
    assert not Chunk.objects.filter(document=document).exists()

    left_processing(document, claimed_s_ago=lifetime + 1)  # claimed longer ago than any job may run
    assert document_ingest_task(str(document.pk)) == "ready"
    document.refresh_from_db()
    assert (document.status, document.error) == ("ready", "")
    assert document.chunk_count == Chunk.objects.filter(document=document).count() > 0


def test_the_same_text_added_again_takes_up_a_document_whose_ingestion_died(alice):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")
    collection = collection_create(owner=alice, name="manuals", embedding_model=LEXICAL)
    first = api.post(f"/api/v1/collections/{collection.pk}/documents/", {"title": "manual", "text": TEXT},
                     format="json")
    document = CollectionDocument.objects.get(pk=first.json()["id"])
    left_processing(document, claimed_s_ago=django_settings.Q_CLUSTER["timeout"] + 1)

    again = api.post(f"/api/v1/collections/{collection.pk}/documents/", {"title": "manual", "text": TEXT},
                     format="json")

    assert again.status_code == 200 and again.json()["id"] == str(document.pk)
    assert (again.json()["status"], again.json()["error"]) == ("ready", "")
    assert again.json()["chunk_count"] == Chunk.objects.filter(document=document).count() > 0


def test_a_json_document_whose_request_was_killed_mid_ingestion_is_taken_up_by_the_sweep(
        alice, openai_server, daphne_server):
    """A document added as JSON text is ingested in its request, with no job: the server killed then, it stayed
    `processing` for ever (no job to deliver again), until the same text was added again."""
    server = daphne_server(OPENAI_BASE_URL=openai_server.base_url, OPENAI_API_KEY="sk-test-not-a-real-key")
    token = ApiTokenFactory(user=alice, scopes=["knowledge"]).key
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})  # the collection's probe of the vectors' size
    collection = client.post("/api/v1/collections/", json={"name": "manuals",
                                                           "embedding_model": "openai/text-embedding-3-small"})
    assert collection.status_code == 201, collection.text
    openai_server.reply(usage={"prompt_tokens": 7, "total_tokens": 7}, hold=True)  # the document's embedding
    answers = []

    def add() -> None:
        try:
            answers.append(client.post(f"/api/v1/collections/{collection.json()['id']}/documents/",
                                       json={"title": "manual", "text": TEXT}))
        except httpx.HTTPError as exc:  # its server killed under it
            answers.append(exc)

    adding = threading.Thread(target=add)
    adding.start()
    upstream_has_taken_every_reply(openai_server)  # its embedding is at the upstream: the request is ingesting
    server.process.kill()
    server.process.wait(10)
    openai_server.always(usage={"prompt_tokens": 7, "total_tokens": 7})
    openai_server.release()
    adding.join()
    assert isinstance(answers[0], httpx.HTTPError), answers
    document = CollectionDocument.objects.get()
    assert document.status == "processing"

    assert documents_lapsed_requeue_task() == 0  # its request may still be running: left to it
    left_processing(document, claimed_s_ago=django_settings.Q_CLUSTER["timeout"] + 1)  # the clock, moved on
    assert documents_lapsed_requeue_task() == 1  # queued, its job run at once by the tests' django-q2

    document.refresh_from_db()
    assert (document.status, document.error) == ("ready", "")
    assert document.chunk_count == Chunk.objects.filter(document=document).count() > 0
    assert documents_lapsed_requeue_task() == 0
    assert Schedule.objects.filter(func="knowledge.tasks.documents_lapsed_requeue_task", repeats=-1).exists()
