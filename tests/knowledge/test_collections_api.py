"""Issue 45, collections and documents over /api/v1/collections/ (on SQLite and PostgreSQL: make test runs this file
on each): CRUD with the model and chunking fixed at creation; a document added as JSON text is chunked
(langchain-text-splitters) and embedded at once, each embeddings request the owner's LLM call; identical text is a
no-op; DELETE removes a document's chunks, vectors and keyword index rows; a failure (budget, provider) leaves it
`failed` with the reason and no chunk; another user gets 404 on every route; keys need the `knowledge` scope."""
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.parsers import text_blank
from knowledge.search import keyword_ids_ranked
from tests.factories import ApiTokenFactory, BudgetFactory, StaffFactory
from tests.invariants import assert_all
from tests.openai_stub import stub_embedding
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db

LEXICAL = "local/local-embed-1"
TEXT = ("Kettles boil water. A cracked seal lets water out of the appliance.\n\n"
        "Descale the kettle every month. Limescale clogs the element and slows boiling.\n\n"
        "Never run the kettle dry: the element overheats and the cut-out trips.")


def api_for(user, scopes=("knowledge",)) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=user, scopes=list(scopes)).key}")
    return api


def collection_made(api, **fields) -> dict:
    answer = api.post("/api/v1/collections/", {"name": "manuals", "embedding_model": LEXICAL, **fields},
                      format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


def test_item_02_a_collections_model_and_chunking_are_fixed_when_it_is_made(alice):
    api = api_for(alice)
    made = collection_made(api, chunk_size=50, chunk_overlap=10)
    url = f"/api/v1/collections/{made['id']}/"

    assert (made["embedding_model"], made["dimensions"], made["chunk_size"], made["chunk_overlap"]) == (
        LEXICAL, 256, 50, 10)
    renamed = api.patch(url, {"name": "kettles"}, format="json")
    refused = api.patch(url, {"chunk_size": 30}, format="json")  # fixed (a new model re-embeds: test_reembed.py)
    shared = api.patch(url, {"shared": True}, format="json")
    again = api.post("/api/v1/collections/", {"name": "kettles"}, format="json")
    unknown = api.post("/api/v1/collections/", {"name": "x", "embedding_model": "local/no-such-model"}, format="json")
    too_big = api.post("/api/v1/collections/", {"name": "y", "chunk_size": 300}, format="json")  # MiniLM reads 254

    assert renamed.status_code == 200 and renamed.json()["name"] == "kettles"
    assert refused.status_code == 400 and shared.status_code == 400  # unknown field; only staff share
    assert (again.status_code, again.json()["error"]["code"]) == (409, "conflict")
    assert unknown.status_code == 400 and unknown.json()["error"]["details"][0]["path"] == "embedding_model"
    assert too_big.status_code == 400 and too_big.json()["error"]["details"][0]["path"] == "chunk_size"
    assert [c["name"] for c in api.get("/api/v1/collections/").json()["results"]] == ["kettles"]
    assert api.delete(url).status_code == 204 and api.get(url).status_code == 404


def test_item_02_a_document_is_chunked_embedded_counted_and_removed_whole(alice, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 2
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=4)
    documents = f"/api/v1/collections/{collection['id']}/documents/"

    added = api.post(documents, {"title": "Kettle manual", "text": TEXT, "metadata": {"lang": "en"}}, format="json")

    assert added.status_code == 201, added.json()
    document = added.json()
    chunks = list(Chunk.objects.filter(document_id=document["id"]).order_by("position"))
    assert document["status"] == "ready" and document["chunk_count"] == len(chunks) >= 3
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    assert all(len(chunk.embedding) == 256 and str(chunk.collection_id) == collection["id"] for chunk in chunks)
    assert "cracked seal" in " ".join(chunk.text for chunk in chunks)
    calls = LLMCall.objects.filter(execution__owner=alice, kind="embedding")
    assert calls.count() == -(-len(chunks) // 2)  # one request per batch of two
    assert len({call.execution_id for call in calls}) == calls.count()  # each a run of its own (docs: accounting)
    assert {call.execution.input_data["variables"]["purpose"]["document"] for call in calls} == {document["id"]}

    again = api.post(documents, {"title": "Same text", "text": TEXT}, format="json")
    assert (again.status_code, again.json()["id"]) == (200, document["id"])
    assert LLMCall.objects.filter(execution__owner=alice).count() == calls.count()
    assert [d["id"] for d in api.get(documents).json()["results"]] == [document["id"]]
    assert api.get(f"{documents}{document['id']}/").json()["chunk_count"] == len(chunks)

    stored = Collection.objects.get(pk=collection["id"])
    assert keyword_ids_ranked(collection=stored, query="limescale", limit=5)
    assert api.delete(f"{documents}{document['id']}/").status_code == 204
    assert not Chunk.objects.exists() and not CollectionDocument.objects.exists()
    assert keyword_ids_ranked(collection=stored, query="limescale", limit=5) == []


def test_a_stretch_of_invisible_characters_inside_a_document_is_no_chunk_of_its_own(alice):
    """A chunk must have something to search, by the rule a whole document's text is held to (knowledge.parsers.
    text_blank): a paragraph of zero-width spaces between two of text is not embedded and charged as a chunk."""
    api = api_for(alice)
    collection = collection_made(api, chunk_size=20, chunk_overlap=0)
    text = TEXT + "\n\n" + "\u200b\u2060 " * 60 + "\n\n" + TEXT

    added = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "gaps", "text": text},
                     format="json")

    assert added.status_code == 201, added.json()
    chunks = Chunk.objects.filter(document_id=added.json()["id"])
    assert chunks.exists() and not [chunk.text for chunk in chunks if text_blank(chunk.text)]


def test_item_02_a_user_over_budget_cannot_ingest_and_nothing_is_half_written(alice):
    api = api_for(alice)
    collection = collection_made(api)
    BudgetFactory(owner=alice, period="month", limit_usd="0.00000001", mode="hard")
    api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "a", "text": "spend it " * 50},
             format="json")

    refused = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "b", "text": TEXT},
                       format="json")

    assert refused.status_code == 201
    assert (refused.json()["status"], refused.json()["chunk_count"]) == ("failed", 0)
    assert refused.json()["error"].startswith("budget_exceeded")
    assert not Chunk.objects.filter(document_id=refused.json()["id"]).exists()


def test_a_hard_token_budget_with_room_embeds_and_searches_and_is_spent_by_the_embeddings_alone(alice, api):
    budget = api.post("/api/v1/budgets/", {"scope": "user", "period": "total", "limit_tokens": 1000, "mode": "hard"},
                      format="json").json()
    collection = collection_made(api)

    added = api.post(f"/api/v1/collections/{collection['id']}/documents/",
                     {"title": "note", "text": "tiny note on kettles"}, format="json")
    found = api.post(f"/api/v1/collections/{collection['id']}/search/", {"query": "kettle"}, format="json")

    assert added.status_code == 201 and (added.json()["status"], added.json()["error"]) == ("ready", ""), added.json()
    assert found.status_code == 200 and found.json()["results"], found.json()
    shown = api.get(f"/api/v1/budgets/{budget['id']}/").json()
    embedded = sum(LLMCall.objects.filter(execution__owner=alice, kind="embedding").values_list(
        "total_tokens", flat=True))
    assert LLMCall.objects.filter(execution__owner=alice).exclude(kind="embedding").count() == 0
    assert (shown["spent_tokens"], shown["reserved_tokens"]) == (embedded, 0) and embedded > 0


def test_a_hard_token_budget_smaller_than_an_embedding_refuses_it(alice, api):
    api.post("/api/v1/budgets/", {"scope": "user", "period": "total", "limit_tokens": 40, "mode": "hard"},
             format="json")
    collection = collection_made(api)

    refused = api.post(f"/api/v1/collections/{collection['id']}/documents/",
                       {"title": "long", "text": "Kettles boil water. " * 8}, format="json")  # 40 tokens read

    assert (refused.json()["status"], refused.json()["chunk_count"]) == ("failed", 0)
    assert refused.json()["error"].startswith("budget_exceeded")
    assert not Chunk.objects.exists() and not LLMCall.objects.exists()


def test_item_02_a_provider_failing_mid_document_leaves_it_failed_without_chunks(alice, openai_server, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 1
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})  # the collection's probe of the vectors' size
    api = api_for(alice)
    collection = collection_made(api, embedding_model="openai/text-embedding-3-small", chunk_size=20,
                                 chunk_overlap=0)
    openai_server.reply(usage={"prompt_tokens": 5, "total_tokens": 5})  # the first chunk's request answers ...
    openai_server.reply(status=500)  # ... the second's fails

    failed = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "m", "text": TEXT},
                      format="json").json()

    assert (failed["status"], failed["chunk_count"]) == ("failed", 0)
    assert collection["dimensions"] == len(stub_embedding("manuals"))  # as the model answered the probe
    assert failed["error"].startswith("embeddings_failed")
    assert not Chunk.objects.exists()
    assert LLMCall.objects.filter(execution__owner=alice, kind="embedding").count() == 2  # the probe, chunk 1


def test_item_02_another_user_gets_404_on_every_collection_route_and_keys_need_the_scope(alice, bob):
    api = api_for(alice)
    collection = collection_made(api)
    url = f"/api/v1/collections/{collection['id']}/"
    document = api.post(f"{url}documents/", {"title": "a", "text": TEXT}, format="json").json()
    bobs = api_for(bob)

    answers = [bobs.get(url), bobs.patch(url, {"name": "mine"}, format="json"), bobs.delete(url),
               bobs.get(f"{url}documents/"), bobs.post(f"{url}documents/", {"title": "b", "text": "x"}, format="json"),
               bobs.get(f"{url}documents/{document['id']}/"), bobs.delete(f"{url}documents/{document['id']}/"),
               bobs.post(f"{url}search/", {"query": "kettle"}, format="json"),
               bobs.get("/api/v1/collections/not-a-uuid/")]

    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert bobs.get("/api/v1/collections/").json()["results"] == []
    assert api_for(alice, scopes=("read", "runs")).get("/api/v1/collections/").status_code == 403
    assert Chunk.objects.filter(document_id=document["id"]).count() == document["chunk_count"] > 0


def test_it_refuses_a_duplicate_name_before_probing_the_models_size(alice, openai_server):
    """A 409 writes nothing: no probe of a remote model's vectors is made (nor charged) for a name already taken,
    whether a collection is made or renamed with a change of model."""
    openai_server.always(usage={"prompt_tokens": 1, "total_tokens": 1})
    api = api_for(alice)
    collection_made(api, embedding_model="openai/text-embedding-3-small")
    other = collection_made(api, name="other")
    runs_before = WorkflowExecution.objects.filter(owner=alice).count()

    again = api.post("/api/v1/collections/", {"name": "manuals", "embedding_model": "openai/text-embedding-3-small"},
                     format="json")
    renamed = api.patch(f"/api/v1/collections/{other['id']}/",
                        {"name": "manuals", "embedding_model": "openai/text-embedding-3-small"}, format="json")

    assert (again.status_code, again.json()["error"]["code"]) == (409, "conflict")
    assert (renamed.status_code, renamed.json()["error"]["code"]) == (409, "conflict")
    assert WorkflowExecution.objects.filter(owner=alice).count() == runs_before
    assert api.get(f"/api/v1/collections/{other['id']}/").json()["embedding_model"] == LEXICAL


def test_it_estimates_and_flags_the_tokens_of_an_embeddings_server_that_reports_no_usage(alice, openai_server):
    """A server that sends no `usage` (some OpenAI-compatible ones) still embeds: each call's tokens are the offline
    estimate of what it read, flagged `estimated`, priced, and in the run's totals."""
    openai_server.always(usage=None)
    api = api_for(alice)
    collection = collection_made(api, embedding_model="openai/text-embedding-3-small")

    added = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "m", "text": TEXT},
                     format="json").json()

    assert (added["status"], added["error"]) == ("ready", "")
    calls = list(LLMCall.objects.filter(execution__owner=alice, kind="embedding"))
    assert len(calls) == 2  # the probe of the vectors' size, the document's chunks
    assert all(call.estimated and call.prompt_tokens > 0 and call.cost > 0 for call in calls)
    for call in calls:
        assert (call.execution.prompt_tokens, call.execution.cost) == (call.prompt_tokens, call.cost)
        assert_all(call.execution)  # the run's, the conversation's and the usage aggregates equal the call's row


def test_it_names_the_size_of_the_vector_that_has_the_wrong_one(alice, openai_server, settings):
    """The second vector of a batch is 8 dimensions longer than the collection's: the error says so (not the first
    vector's size, which was right), and the document is failed without chunks."""
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1})  # the probe: 3 dimensions
    api = api_for(alice)
    collection = collection_made(api, embedding_model="openai/text-embedding-3-small", chunk_size=20,
                                 chunk_overlap=0)
    openai_server.reply(usage={"prompt_tokens": 5, "total_tokens": 5}, embedding_sizes={1: 11})

    failed = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "m", "text": TEXT},
                      format="json").json()

    assert (failed["status"], failed["chunk_count"]) == ("failed", 0)
    assert "a vector of 11 dimensions, the collection's are 3" in failed["error"], failed["error"]
    assert not Chunk.objects.exists()


def test_it_filters_collections_by_name_and_documents_by_status(alice, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 8
    api = api_for(alice)
    kettles = collection_made(api, name="kettle manuals")
    collection_made(api, name="bicycles")
    documents = f"/api/v1/collections/{kettles['id']}/documents/"
    api.post(documents, {"title": "Kettle", "text": TEXT}, format="json")
    BudgetFactory(owner=alice, period="month", limit_usd="0.00000001", mode="hard")
    api.post(documents, {"title": "Descaling", "text": "Descale it monthly. " * 400}, format="json")

    named = api.get("/api/v1/collections/?name=kettle").json()["results"]
    failed = api.get(f"{documents}?status=failed").json()["results"]
    ready = api.get(f"{documents}?status=ready&title=kett").json()["results"]
    bad = api.get(f"{documents}?status=lost")

    assert [c["name"] for c in named] == ["kettle manuals"]
    assert [(d["title"], d["status"]) for d in failed] == [("Descaling", "failed")]
    assert [(d["title"], d["status"]) for d in ready] == [("Kettle", "ready")]
    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["path"] == "status"


def test_it_orders_a_collections_documents_and_refuses_an_unknown_ordering_field(alice):
    api = api_for(alice)
    documents = f"/api/v1/collections/{collection_made(api)['id']}/documents/"
    for title in ("b doc", "a doc", "c doc"):
        api.post(documents, {"title": title, "text": f"text of {title}"}, format="json")

    def titles(query):
        answer = api.get(f"{documents}{query}")
        assert answer.status_code == 200, answer.json()
        return [d["title"] for d in answer.json()["results"]]

    bogus = api.get(f"{documents}?ordering=bogus")

    assert titles("") == ["b doc", "a doc", "c doc"]  # oldest first
    assert titles("?ordering=-created_at") == ["c doc", "a doc", "b doc"]
    assert titles("?ordering=title") == ["a doc", "b doc", "c doc"]
    assert titles("?status=ready&ordering=-title") == ["c doc", "b doc", "a doc"]
    assert bogus.status_code == 400
    (detail,) = bogus.json()["error"]["details"]
    assert (detail["path"], detail["code"]) == ("ordering", "invalid_choice")
    assert "one of: created_at, title, status" in detail["message"]


def test_it_filters_collections_by_shared_and_refuses_a_value_that_is_neither_true_nor_false(alice, staff):
    collection_made(api_for(staff), name="handbook", shared=True)
    api = api_for(alice)
    collection_made(api, name="mine")

    def names(query):
        answer = api.get(f"/api/v1/collections/{query}")
        assert answer.status_code == 200, answer.json()
        return [c["name"] for c in answer.json()["results"]]

    bad = [api.get(f"/api/v1/collections/?shared={value}") for value in ("maybe", "2", "yes")]

    assert [answer.status_code for answer in bad] == [400] * 3
    assert [answer.json()["error"]["details"] for answer in bad] == [
        [{"path": "shared", "code": "invalid", "message": "must be true or false"}]] * 3
    assert (names("?shared=true"), names("?shared=false"), names("?shared=0")) == (["handbook"], ["mine"], ["mine"])
    assert names("?shared=") == ["handbook", "mine"]


def test_it_refuses_a_document_of_only_invisible_characters_as_blank(alice):
    api = api_for(alice)
    collection = collection_made(api)

    answers = [api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": "x", "text": text},
                        format="json") for text in (" \n\t ", "\u200b\u200b\ufeff", "\u200d \u2060")]

    assert [answer.status_code for answer in answers] == [400] * 3
    assert [answer.json()["error"]["details"][0]["code"] for answer in answers] == ["blank"] * 3
    assert not CollectionDocument.objects.exists() and not LLMCall.objects.exists()


def test_staff_adding_to_a_shared_collection_they_do_not_own_embed_as_its_owner_not_on_their_key(
        staff, django_capture_on_commit_callbacks):
    """The embeddings are the collection owner's runs: another staff member's key is not booked with them (its
    budgets, usage by key); the owner's own key still is."""
    owners_key = ApiTokenFactory(user=staff, scopes=["knowledge"])
    owner = APIClient()
    owner.credentials(HTTP_AUTHORIZATION=f"Bearer {owners_key.key}")
    collection = collection_made(owner, shared=True)
    documents = f"/api/v1/collections/{collection['id']}/documents/"
    carol = api_for(StaffFactory(username="carol"))

    as_text = carol.post(documents, {"title": "by carol", "text": TEXT}, format="json").json()
    with django_capture_on_commit_callbacks(execute=True):  # the ingestion job, inline (CHATTER_Q_SYNC)
        as_file = carol.post(documents, {"file": SimpleUploadedFile("b.txt", b"Descale the kettle monthly.",
                                                                    content_type="text/plain")},
                             format="multipart").json()
    by_owner = owner.post(documents, {"title": "by the owner", "text": "Never run the kettle dry."},
                          format="json").json()

    assert [CollectionDocument.objects.get(pk=d["id"]).status for d in (as_text, as_file, by_owner)] == ["ready"] * 3
    runs = {document["id"]: list(WorkflowExecution.objects.filter(
        input_data__variables__purpose__document=document["id"]).values_list("owner__username", "api_key"))
        for document in (as_text, as_file, by_owner)}
    assert runs[as_text["id"]] and set(runs[as_text["id"]]) == set(runs[as_file["id"]]) == {("root", None)}
    assert set(runs[by_owner["id"]]) == {("root", owners_key.pk)}


def test_it_refuses_a_chat_model_as_a_collections_embedding_model_naming_the_field(alice):
    api = api_for(alice)
    kept = collection_made(api)

    made = api.post("/api/v1/collections/", {"name": "chat", "embedding_model": "local/local-echo-1"}, format="json")
    changed = api.patch(f"/api/v1/collections/{kept['id']}/", {"embedding_model": "local-echo-1"}, format="json")

    for answer in (made, changed):
        assert answer.status_code == 400, answer.json()
        (detail,) = answer.json()["error"]["details"]
        assert (detail["path"], detail["code"]) == ("embedding_model", "no_embeddings")
        assert "local-echo-1 has no embeddings API" in answer.json()["error"]["message"]
    stored = Collection.objects.get()
    assert (str(stored.pk), stored.embedding_model, stored.pending_embedding_model) == (kept["id"], LEXICAL, "")
    assert not LLMCall.objects.exists()


def test_it_says_what_to_change_when_a_chunk_size_is_below_the_default_overlap(alice, settings):
    settings.CHATTER_KNOWLEDGE_CHUNK_OVERLAP = 40
    api = api_for(alice)

    small = api.post("/api/v1/collections/", {"name": "small", "embedding_model": LEXICAL, "chunk_size": 10},
                     format="json")
    with_overlap = collection_made(api, name="small", chunk_size=10, chunk_overlap=2)

    assert small.status_code == 400
    (detail,) = small.json()["error"]["details"]
    assert (detail["path"], detail["code"]) == ("chunk_size", "below_default_overlap")
    assert "send a chunk_overlap below 10" in small.json()["error"]["message"]
    assert (with_overlap["chunk_size"], with_overlap["chunk_overlap"]) == (10, 2)
