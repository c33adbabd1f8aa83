"""Issue 45, the optional rerank step: a collection search (the API's, and a retrieval node's through the same code)
that names a rerank model sends the chunks it found to the provider's rerank endpoint (Cohere's and Jina's `/rerank`
shape, which llama.cpp's server speaks; here the OpenAI stub, a real HTTP server) and keeps the ones it scores most
relevant. Each rerank is an LLM call of kind `rerank` with the tokens the provider reported and their cost, charged
to the searcher and held to budgets, like an embedding."""
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from knowledge.ingest import document_ingest
from knowledge.models import Chunk
from knowledge.services import collection_create, document_add
from tests.factories import ApiTokenFactory, BudgetFactory, ModelPriceFactory, WorkflowDefinitionFactory
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, LLMCall
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db

RERANKER = "rerank-stub"
DOCUMENTS = [("Seal", "A cracked kettle seal lets water out of the kettle."),
             ("Lid", "The kettle lid hinge snapped."),
             ("Gears", "Index the rear derailleur by turning the barrel adjuster.")]
QUERY = "kettle"  # the keyword ranking: the chunks that hold it, Seal (twice) before Lid


@pytest.fixture
def reranker(openai_server):
    """The stub serves the rerank model, priced at $0.05 a million tokens read."""
    openai_server.served_models.append(RERANKER)
    ModelPriceFactory(provider="openai", model_pattern=RERANKER, input_per_million=Decimal("0.05"),
                      output_per_million=Decimal("0"))
    return openai_server


@pytest.fixture
def manuals(alice):
    collection = collection_create(owner=alice, name="manuals", embedding_model="local/local-embed-1")
    for title, text in DOCUMENTS:
        document, _ = document_add(collection=collection, actor=alice, title=title, text=text)
        assert document_ingest(document).status == "ready"
    return collection


def searched(alice, collection, **body):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")
    return api.post(f"/api/v1/collections/{collection.pk}/search/", {"query": QUERY, **body}, format="json")


def cost(tokens: int) -> Decimal:
    return (Decimal(tokens) * Decimal("0.05") / 10**6).quantize(Decimal("1e-8"))


def test_item_01_a_search_reranked_by_a_providers_rerank_endpoint_keeps_its_best_as_a_counted_call(
        alice, manuals, reranker):
    # The reranker puts the Lid first, which words alone put second.
    reranker.reply(model=RERANKER, relevance_scores=[0.2, 0.9], usage={"prompt_tokens": 42, "total_tokens": 42})

    answer = searched(alice, manuals, mode="keyword", k=1, rerank_model=RERANKER)

    assert answer.status_code == 200, answer.json()
    (hit,) = answer.json()["results"]
    assert (hit["title"], hit["score"], hit["scores"]["rerank"]) == ("Lid", 0.9, 0.9) and hit["scores"]["keyword"] > 0
    sent = reranker.last_request
    assert sent.path == "/v1/rerank" and sent.headers["authorization"] == "Bearer sk-test-not-a-real-key"
    assert sent.body == {"model": RERANKER, "query": QUERY, "top_n": 1, "documents": [
        DOCUMENTS[0][1], DOCUMENTS[1][1]]}  # the keyword ranking's chunks, best first
    (call,) = LLMCall.objects.filter(execution__owner=alice, kind="rerank")
    assert (call.provider, call.requested_model, call.prompt_tokens, call.completion_tokens, call.estimated) == (
        "openai", RERANKER, 42, 0, False)
    assert call.cost == cost(42) and call.execution.cost == cost(42)
    assert call.execution.input_data["variables"]["purpose"] == {"query": QUERY, "collection": str(manuals.pk)}
    assert_all(call.execution)  # the run's, the conversation's and the usage aggregates equal the call's row


def test_a_hard_token_budget_with_room_reranks_reserving_what_the_rerank_reads_alone(alice, manuals, reranker):
    """A rerank completes nothing: under a hard token budget it reserves the estimate of what it reads, not a
    completion's default max_tokens (1,024: a 1,000-token budget with nothing spent refused every rerank)."""
    budget = BudgetFactory(owner=alice, period="total", limit_tokens=1000, mode="hard")
    reranker.reply(model=RERANKER, relevance_scores=[0.2, 0.9], usage={"prompt_tokens": 42, "total_tokens": 42})

    answer = searched(alice, manuals, mode="keyword", k=1, rerank_model=RERANKER)

    assert answer.status_code == 200, answer.json()
    (period,) = budget.periods.all()
    assert (period.spent_tokens, period.reserved_tokens) == (42, 0)


def test_item_01_a_rerank_model_that_cannot_rerank_is_a_400_before_anything_is_charged(alice, manuals, reranker):
    calls_before = LLMCall.objects.count()
    for model, code in (("openai/no-such-reranker", "unknown_model"), ("local/local-embed-1", "no_rerank")):
        answer = searched(alice, manuals, rerank_model=model)  # hybrid: a query to embed too, were it not refused
        assert answer.status_code == 400, answer.json()
        assert answer.json()["error"]["details"][0]["path"] == "rerank_model"
        assert answer.json()["error"]["details"][0]["code"] == code
    assert LLMCall.objects.count() == calls_before and reranker.requests == []


def test_item_01_budgets_hold_reranks_and_a_failing_reranker_is_a_502(alice, manuals, reranker, settings):
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    reranker.reply(status=500)
    failed = searched(alice, manuals, mode="keyword", rerank_model=RERANKER)
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "rerank_failed"
    assert not LLMCall.objects.filter(kind="rerank").exists()

    reranker.reply(model=RERANKER, usage={"prompt_tokens": 30, "total_tokens": 30})
    assert searched(alice, manuals, mode="keyword", rerank_model=RERANKER).status_code == 200
    BudgetFactory(owner=alice, period="month", limit_usd=Decimal("0.00000001"), mode="hard")  # no room for one
    refused = searched(alice, manuals, mode="keyword", rerank_model=RERANKER)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert len(reranker.requests) == 2 and LLMCall.objects.filter(kind="rerank").count() == 1


def test_item_01_the_retrieval_node_reranks_in_the_run_as_a_call_of_its_node(alice, manuals, reranker):
    reranker.reply(model=RERANKER, relevance_scores=[0.1, 0.7], usage={"total_tokens": 25})  # Jina's usage shape
    lid = Chunk.objects.get(document__title="Lid")
    nodes = [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}, {"id": "answer", "type": "model"},
             {"id": "search", "type": "retrieval",
              "config": {"collections": ["manuals"], "k": 1, "mode": "keyword", "rerank_model": RERANKER}}]
    edges = [{"source": "start", "target": "search"}, {"source": "search", "target": "answer"},
             {"source": "answer", "target": "end"}]
    definition = WorkflowDefinitionFactory(owner=alice, nodes=nodes, edges=edges)

    execution = execution_run(execution_id=execution_create(
        ChatRequest(owner=alice, message=QUERY, definition_id=definition.pk)).pk)

    assert execution.status == "completed", execution.error_message
    assert [(c["chunk_id"], c["score"]) for c in execution.output_data["citations"]] == [(lid.pk, 0.7)]
    (call,) = LLMCall.objects.filter(execution=execution, kind="rerank")
    assert (call.node_execution.node_id, call.requested_model, call.prompt_tokens, call.cost) == (
        "search", RERANKER, 25, cost(25))
    assert execution.cost == sum(LLMCall.objects.filter(execution=execution).values_list("cost", flat=True))
    record = ExecutionEvent.objects.get(execution=execution, event="retrieval").data
    assert record["rerank_model"] == RERANKER and record["reranks"] == [
        {"model": f"openai/{RERANKER}", "documents": 2}]
    assert reranker.last_request.body["documents"] == [DOCUMENTS[0][1], DOCUMENTS[1][1]]


def test_it_keeps_each_chunk_once_when_the_reranker_names_a_document_twice(alice, manuals, reranker):
    """A reranker answering the first document three times (at different scores): that chunk once, at its best."""
    reranker.reply(model=RERANKER, usage={"prompt_tokens": 42}, rerank_results=[
        {"index": 0, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.8},
        {"index": 1, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.1}])

    answer = searched(alice, manuals, mode="keyword", k=3, rerank_model=RERANKER)

    assert answer.status_code == 200, answer.json()
    assert [(hit["title"], hit["score"]) for hit in answer.json()["results"]] == [("Seal", 0.9), ("Lid", 0.5)]
    assert len({hit["chunk_id"] for hit in answer.json()["results"]}) == 2


def test_a_rerank_held_past_its_runs_timeout_is_not_sent_again(alice, manuals, reranker, settings):
    """Each retry of the client library got the whole of what was left of the run again: a reranker that stopped
    answering held the search three times the run's timeout, and was asked three times."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 2
    reranker.reply(model=RERANKER, usage={"prompt_tokens": 30, "total_tokens": 30})
    assert searched(alice, manuals, mode="keyword", rerank_model=RERANKER).status_code == 200  # the client loaded
    settings.CHATTER_EXECUTION_TIMEOUT_S = 2
    reranker.always(model=RERANKER, usage={"prompt_tokens": 30, "total_tokens": 30}, delay_s=5)

    answer = searched(alice, manuals, mode="keyword", rerank_model=RERANKER)

    assert answer.status_code == 429 and answer.json()["error"]["code"] == "limit_exceeded", answer.json()
    assert len(reranker.requests) == 2  # one each: none sent past the run's deadline
    assert LLMCall.objects.filter(kind="rerank").count() == 1


@pytest.mark.parametrize("score", [float("nan"), float("inf")], ids=["nan", "infinity"])
def test_a_rerank_score_that_is_no_finite_number_is_a_502_and_no_call(alice, manuals, reranker, score):
    """It made the run's record fail after its call was booked ("the run could not be recorded: DataError ... NaN"
    on PostgreSQL, a CHECK on SQLite): the 502's message was the database's."""
    reranker.reply(model=RERANKER, usage={"prompt_tokens": 30}, rerank_results=[
        {"index": 0, "relevance_score": score}, {"index": 1, "relevance_score": 0.5}])

    answer = searched(alice, manuals, mode="keyword", k=2, rerank_model=RERANKER)

    assert answer.status_code == 502 and answer.json()["error"]["code"] == "rerank_failed", answer.json()
    assert "relevance_score that is no finite number" in answer.json()["error"]["message"]
    assert not LLMCall.objects.filter(kind="rerank").exists()


@pytest.mark.parametrize("index", [True, 0.9, "1"], ids=["true", "fraction", "string"])
def test_a_rerank_index_that_is_no_integer_is_a_502_and_no_call(alice, manuals, reranker, index):
    """Read as int(), `true` named the second document and 0.9 the first: the search answered 200, booked."""
    reranker.reply(model=RERANKER, usage={"prompt_tokens": 30}, rerank_results=[
        {"index": index, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.5}])

    answer = searched(alice, manuals, mode="keyword", k=2, rerank_model=RERANKER)

    assert answer.status_code == 502 and answer.json()["error"]["code"] == "rerank_failed", answer.json()
    assert f"index {index!r} is not an integer" in answer.json()["error"]["message"]
    assert not LLMCall.objects.filter(kind="rerank").exists()
