"""A team's clients on one collection at once through /api/v1/collections/ (released together by a barrier, or a
delete landing while an embedding request is at the upstream): the same text is one document embedded once; the
embedding model changed by many at once is one re-embedding (the others a 409); a document or the collection
deleted while the collection is re-embedded is gone without failing the rest; a collection changed and deleted
at once is a 404, never a 500; every embedding made is counted once and the aggregates reconcile. On SQLite (one
writer at a time) and PostgreSQL (writers in parallel)."""
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections
from django_q.models import Task

from knowledge.models import Chunk, Collection, CollectionDocument
from tests.knowledge.test_collections_api import LEXICAL, TEXT, api_for, collection_made
from tests.together import at_once
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)

NEW_MODEL = "openai/text-embedding-3-small"
CLIENTS = 12
SLOW_S = 3.0  # the upstream's answer to the embedding a delete lands during


def reconciled() -> None:
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out)
    assert "zero drift" in out.getvalue(), out.getvalue()


def reembedding_runs(model: str = NEW_MODEL):
    return WorkflowExecution.objects.filter(input_data__variables__purpose__reembed=model)


def in_thread(call) -> tuple[threading.Thread, list]:
    """`call()` started in a thread of its own (its connections closed as it ends); what it returned in the list."""
    answers: list = []

    def run() -> None:
        try:
            answers.append(call())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def upstream_has_taken_every_reply(upstream) -> None:
    """Wait until the stub has taken its scripted replies: the last one's request is at the upstream."""
    deadline = time.monotonic() + 30
    while upstream.pending:
        assert time.monotonic() < deadline, "the scripted replies were not all taken"
        time.sleep(0.02)


@pytest.fixture
def kettle_collection(alice, openai_server):
    """Alice's collection on the lexical model with two ready documents; the stub answers every embedding."""
    openai_server.always(usage={"prompt_tokens": 4, "total_tokens": 4})
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)
    documents = [api.post(f"/api/v1/collections/{collection['id']}/documents/",
                          {"title": f"kettle {index}", "text": f"{TEXT}\n\nPart {index}."}, format="json").json()
                 for index in range(2)]
    return api, collection, documents


def test_the_same_text_added_at_once_is_one_document_embedded_once(alice):
    collection = collection_made(api_for(alice))
    url = f"/api/v1/collections/{collection['id']}/documents/"

    answers = at_once(CLIENTS, lambda index: api_for(alice).post(url, {"title": f"copy {index}", "text": TEXT},
                                                                format="json"))

    assert sorted(answer.status_code for answer in answers) == [200] * (CLIENTS - 1) + [201]
    (document,) = CollectionDocument.objects.all()
    assert {answer.json()["id"] for answer in answers} == {str(document.pk)}
    assert (document.status, document.chunk_count) == ("ready", Chunk.objects.filter(document=document).count())
    assert LLMCall.objects.filter(kind="embedding").count() == 1  # its one batch, embedded once
    reconciled()


def test_the_embedding_model_changed_at_once_is_one_reembedding(alice, kettle_collection, openai_server):
    api, collection, documents = kettle_collection
    url = f"/api/v1/collections/{collection['id']}/"

    answers = at_once(8, lambda index: api_for(alice).patch(url, {"embedding_model": NEW_MODEL}, format="json"))

    # 409 while the change is under way; a 200 once it has ended (the model asked for is the collection's).
    assert {answer.status_code for answer in answers} <= {200, 409}, [answer.content[:200] for answer in answers]
    assert {answer.json()["error"]["code"] for answer in answers if answer.status_code == 409} <= {"reembedding"}
    assert Task.objects.filter(name=f"reembed-{collection['id']}").count() == 1  # one job started
    stored = Collection.objects.get(pk=collection["id"])
    assert (stored.embedding_model, stored.pending_embedding_model, stored.reembed_error) == (NEW_MODEL, "", "")
    assert reembedding_runs().count() == len(documents)  # one request for each document's chunks, once
    assert not Chunk.objects.filter(collection__isnull=True).exists()  # nothing left staged
    for document in CollectionDocument.objects.all():
        assert (document.status, document.chunk_count) == ("ready", document.chunks.count())
        assert set(document.chunks.values_list("dimensions", flat=True)) == {3}
    # Every request the upstream took (the size probes of the changes refused as well) is one counted call.
    assert LLMCall.objects.filter(kind="embedding", provider="openai").count() == len(openai_server.requests)
    reconciled()


def test_a_document_deleted_while_the_collection_is_reembedded_leaves_the_others_reembedded(
        alice, kettle_collection, openai_server):
    api, collection, (gone, kept) = kettle_collection
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})  # the new model's size, probed
    openai_server.reply(usage={"prompt_tokens": 4, "total_tokens": 4}, delay_s=SLOW_S)  # the first document's
    changing, answers = in_thread(lambda: api_for(alice).patch(f"/api/v1/collections/{collection['id']}/",
                                                               {"embedding_model": NEW_MODEL}, format="json"))
    upstream_has_taken_every_reply(openai_server)

    deleted = api.delete(f"/api/v1/collections/{collection['id']}/documents/{gone['id']}/")
    changing.join()

    assert deleted.status_code == 204 and answers[0].status_code == 200, answers[0].content
    stored = Collection.objects.get(pk=collection["id"])
    assert (stored.embedding_model, stored.pending_embedding_model, stored.reembed_error) == (NEW_MODEL, "", "")
    remaining = CollectionDocument.objects.get()
    assert str(remaining.pk) == kept["id"] and remaining.status == "ready"
    assert remaining.chunk_count == remaining.chunks.count() > 0
    assert set(remaining.chunks.values_list("dimensions", flat=True)) == {3}
    assert Chunk.objects.count() == remaining.chunk_count  # nothing of the deleted one, nothing left staged
    assert reembedding_runs().count() == 2  # the deleted document's embedding stays counted
    reconciled()


def test_a_collection_deleted_while_it_is_reembedded_ends_the_job_as_gone(alice, kettle_collection, openai_server):
    api, collection, _ = kettle_collection
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})
    openai_server.reply(usage={"prompt_tokens": 4, "total_tokens": 4}, delay_s=SLOW_S)
    changing, answers = in_thread(lambda: api_for(alice).patch(f"/api/v1/collections/{collection['id']}/",
                                                               {"embedding_model": NEW_MODEL}, format="json"))
    upstream_has_taken_every_reply(openai_server)

    deleted = api.delete(f"/api/v1/collections/{collection['id']}/")
    changing.join()

    assert deleted.status_code == 204 and answers[0].status_code == 200
    job = Task.objects.get(name=f"reembed-{collection['id']}")
    assert (job.success, job.result) == (True, "gone")
    assert not Collection.objects.exists() and not CollectionDocument.objects.exists() and not Chunk.objects.exists()
    reconciled()


def test_a_collection_changed_and_deleted_at_once_is_deleted_once_and_never_a_500(alice):
    api = api_for(alice)
    for round_ in range(3):  # each round a collection of its own, changed and deleted by clients released together
        collection = collection_made(api, name=f"manuals {round_}")
        url = f"/api/v1/collections/{collection['id']}/"

        def write(index: int, url=url):
            if index % 2:
                return api_for(alice).delete(url)
            return api_for(alice).patch(url, {"description": f"edition {index}"}, format="json")

        answers = at_once(CLIENTS, write)

        deletes = [answer for index, answer in enumerate(answers) if index % 2]
        changes = [answer for index, answer in enumerate(answers) if not index % 2]
        assert sorted(answer.status_code for answer in deletes) == [204] + [404] * (len(deletes) - 1), [
            answer.content[:200] for answer in deletes]
        assert {answer.status_code for answer in changes} <= {200, 404}, [answer.content[:200] for answer in changes]
        assert all(answer.json()["error"]["code"] == "not_found" for answer in answers if answer.status_code == 404)
        assert not Collection.objects.filter(pk=collection["id"]).exists()
