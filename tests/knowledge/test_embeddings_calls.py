"""Issue 45, embeddings through the provider layer: gateway.embeddings.embeddings_create batches texts, and each
provider request is an LLMCall of kind `embedding` with the tokens it read and its cost, in one run that says what it
served; the in-process MiniLM model, the lexical `local-embed-1` and an OpenAI-compatible upstream alike; a user over
budget is refused before any call; aggregates reconcile."""
from decimal import Decimal
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from budgets.services import BudgetRefused
from engine.embeddings_minilm import minilm_embed
from engine.usage import estimate_input_tokens
from gateway.embeddings import EmbeddingsFailed, embeddings_create
from knowledge.services import collection_create
from tests.factories import ApiTokenFactory, BudgetFactory
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db


def price(tokens: int, per_million: str) -> Decimal:
    return (Decimal(tokens) * Decimal(per_million) / 10**6).quantize(Decimal("0.00000001"))


def test_item_01_each_batch_is_an_llm_call_of_kind_embedding_with_its_tokens_and_cost(alice, settings):
    settings.CHATTER_EMBEDDING_BATCH_SIZE = 2
    texts = ["one kettle", "two kettles leak", "a cracked seal", "water on the floor", "five"]

    embedded = embeddings_create(owner=alice, model="local/local-embed-1", texts=texts,
                                 purpose={"document": 7})

    execution = embedded.execution
    calls = list(LLMCall.objects.filter(execution=execution).order_by("id"))
    assert len(embedded.vectors) == 5 and len(calls) == 3
    assert {call.kind for call in calls} == {"embedding"}
    assert execution.input_data["variables"]["purpose"] == {"document": 7}
    assert (execution.owner, execution.status, execution.llm_calls) == (alice, "completed", 3)
    assert execution.prompt_tokens == sum(call.prompt_tokens for call in calls) > 0
    assert all(call.cost == price(call.prompt_tokens, "0.50") for call in calls)
    assert execution.cost == sum(call.cost for call in calls)
    assert_all(execution)
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out)
    assert "zero drift" in out.getvalue(), out.getvalue()


def test_item_01_the_in_process_minilm_model_is_a_local_model_counted_by_its_word_pieces(alice):
    texts = ["My kettle leaks, what is broken?", "A cracked seal lets water out of the appliance."]

    embedded = embeddings_create(owner=alice, model="local/all-MiniLM-L6-v2", texts=texts)

    vectors, word_pieces = minilm_embed(texts)
    assert np.allclose(embedded.vectors, vectors, atol=1e-6)
    (call,) = LLMCall.objects.filter(execution=embedded.execution)
    assert (call.kind, call.provider, call.requested_model, call.prompt_tokens) == (
        "embedding", "local", "all-MiniLM-L6-v2", word_pieces)
    assert call.cost == price(word_pieces, "0.02")


def test_item_01_an_upstreams_usage_is_what_the_call_records(alice, openai_server):
    openai_server.reply(usage={"prompt_tokens": 11, "total_tokens": 11}, model="text-embedding-3-small")

    embedded = embeddings_create(owner=alice, model="openai/text-embedding-3-small", texts=["a", "b"])

    (call,) = LLMCall.objects.filter(execution=embedded.execution)
    assert (call.kind, call.prompt_tokens, call.estimated, call.cost) == ("embedding", 11, False, price(11, "0.02"))
    assert openai_server.requests[-1].body["input"] == ["a", "b"]


@pytest.mark.parametrize("usage", [{"prompt_tokens": -100, "total_tokens": -100},
                                   {"prompt_tokens": "many", "total_tokens": "many"},
                                   {"prompt_tokens": 2.7, "total_tokens": 2.7},
                                   {"prompt_tokens": 10**30, "total_tokens": 10**30}],
                         ids=["negative", "text", "fraction", "past_a_trillion"])
def test_an_upstreams_usage_that_is_no_count_is_estimated_and_flagged(alice, openai_server, usage):
    """Such a usage was booked as 0 tokens and $0, not flagged, where a chat or a rerank call's is estimated."""
    openai_server.reply(usage=usage, model="text-embedding-3-small")

    embedded = embeddings_create(owner=alice, model="openai/text-embedding-3-small", texts=["a kettle", "leaks"])

    (call,) = LLMCall.objects.filter(execution=embedded.execution)
    estimate = estimate_input_tokens(["a kettle", "leaks"])
    assert (call.prompt_tokens, call.estimated, call.cost) == (estimate, True, price(estimate, "0.02"))
    assert embedded.execution.prompt_tokens == estimate
    assert_all(embedded.execution)


@pytest.mark.parametrize("data", [
    [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25, 0.125]}],
    [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25, 0.125]},
     {"object": "embedding", "index": 0, "embedding": [0.5, 0.25, 0.125]}],
    [{"object": "embedding", "index": 0, "embedding": [float("nan"), 0.25, 0.125]},
     {"object": "embedding", "index": 1, "embedding": [0.5, 0.25, 0.125]}],
    [{"object": "embedding", "index": 0, "embedding": [0.5, float("inf"), 0.125]},
     {"object": "embedding", "index": 1, "embedding": [0.5, 0.25, 0.125]}]],
    ids=["one_vector_short", "one_index_twice", "nan", "infinity"])
def test_an_embeddings_answer_of_another_shape_is_a_502_and_no_call(alice, openai_server, data):
    """A vector short was an IndexError (a search's 500) or a ValueError (a document's internal_error); NaN or
    Infinity made the run's record fail ("the run could not be recorded: DataError ... NaN") after its call was
    booked: such an answer is the provider's error, as a rerank answer or a chat completion of another shape is."""
    openai_server.reply(body={"object": "list", "model": "text-embedding-3-small", "data": data,
                              "usage": {"prompt_tokens": 4, "total_tokens": 4}})

    with pytest.raises(EmbeddingsFailed) as failed:
        embeddings_create(owner=alice, model="openai/text-embedding-3-small", texts=["a kettle", "leaks"])

    assert (failed.value.status, failed.value.code) == (502, "embeddings_failed")
    execution = WorkflowExecution.objects.get(pk=failed.value.details[0]["message"])
    assert (execution.status, execution.error_type) == ("failed", "provider_error")
    assert "embeddings answer is not one vector of finite numbers" in execution.error_message
    assert not LLMCall.objects.filter(execution__owner=alice).exists()
    assert_all(execution)


def test_a_search_whose_query_the_upstream_answers_no_vector_for_is_a_502(alice, openai_server):
    openai_server.reply(usage={"prompt_tokens": 1, "total_tokens": 1}, model="text-embedding-3-small")  # the size
    collection = collection_create(owner=alice, name="manuals", embedding_model="openai/text-embedding-3-small")
    openai_server.reply(body={"object": "list", "model": "text-embedding-3-small", "data": [],
                              "usage": {"prompt_tokens": 2, "total_tokens": 2}})
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")

    answer = api.post(f"/api/v1/collections/{collection.pk}/search/", {"query": "kettle", "mode": "vector"},
                      format="json")

    assert answer.status_code == 502 and answer.json()["error"]["code"] == "embeddings_failed", answer.json()


def test_item_01_a_user_over_budget_is_refused_before_the_call(alice):
    first = embeddings_create(owner=alice, model="local/local-embed-1", texts=["spend something"])
    BudgetFactory(owner=alice, period="month", limit_usd=first.execution.cost, mode="hard")

    with pytest.raises(BudgetRefused):
        embeddings_create(owner=alice, model="local/local-embed-1", texts=["more"])

    assert WorkflowExecution.objects.filter(owner=alice).count() == 1
    assert LLMCall.objects.filter(execution__owner=alice).count() == 1


def test_a_runs_timeout_holds_its_embeddings_calls_retries_and_keeps_what_it_embedded(alice, openai_server, settings):
    """Each retry of the client library got the whole of what was left of the run again: an upstream that stopped
    answering held an embeddings run (a document's ingestion, a search's query) three times its timeout and was asked
    three times. The batches embedded before stay counted."""
    settings.CHATTER_PROVIDER_MAX_RETRIES, settings.CHATTER_EMBEDDING_BATCH_SIZE = 2, 1
    openai_server.reply(usage={"prompt_tokens": 3, "total_tokens": 3}, model="text-embedding-3-small")
    embeddings_create(owner=alice, model="openai/text-embedding-3-small", texts=["warm"])  # the client library loaded
    settings.CHATTER_EXECUTION_TIMEOUT_S = 2
    openai_server.reply(usage={"prompt_tokens": 11, "total_tokens": 11}, model="text-embedding-3-small")
    openai_server.always(usage={"prompt_tokens": 11, "total_tokens": 11}, delay_s=5)

    with pytest.raises(EmbeddingsFailed) as failed:
        embeddings_create(owner=alice, model="openai/text-embedding-3-small", texts=["a", "b"])

    assert (failed.value.status, failed.value.code) == (429, "limit_exceeded")
    execution = WorkflowExecution.objects.get(pk=failed.value.details[0]["message"])
    assert (execution.status, execution.error_type) == ("failed", "limit_exceeded")
    assert [request.body["input"] for request in openai_server.requests] == [["warm"], ["a"], ["b"]]  # none again
    assert (execution.llm_calls, execution.prompt_tokens, execution.cost) == (1, 11, price(11, "0.02"))
    assert_all(execution)
