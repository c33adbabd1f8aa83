"""POST /v1/embeddings through OpenAI's own client (sync, async) and LangChain's OpenAIEmbeddings against a real
daphne server: each call is a `gateway` run whose one LLM call is the provider's embeddings call, its usage (the
tokens read) stored exactly and priced, in budgets and analytics; the offline `local` provider's deterministic
`local-embed-1` works out of the box; bad input is a 400 and no run; another user does not see the run."""
import asyncio
import math
from decimal import Decimal

import httpx
import openai
import pytest
from langchain_openai import OpenAIEmbeddings

from tests.factories import ApiTokenFactory, BudgetFactory
from tests.gateway.conftest import client
from tests.invariants import assert_all
from tests.openai_stub import stub_embedding
from workflows.models import LLMCall, WorkflowExecution

TEXTS = ["The cat sat on the mat.", "A dog barked."]
USAGE = {"prompt_tokens": 11, "total_tokens": 11}
# text-embedding-3-small: $0.02 per million input tokens (analytics' seeded price)
COST = (Decimal(11) * Decimal("0.02") / 10**6).quantize(Decimal("0.00000001"))


def assert_recorded(execution_id, *, tokens: int, cost: Decimal, model: str) -> WorkflowExecution:
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert (execution.workflow_type, execution.status) == ("gateway", "completed"), execution.error_message
    (call,) = LLMCall.objects.filter(execution=execution)
    assert (call.requested_model, call.estimated, call.kind) == (model, False, "embedding")
    assert (execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) == (tokens, 0, tokens) == (
        call.prompt_tokens, call.completion_tokens, call.total_tokens)
    assert execution.cost == call.cost == cost
    assert_all(execution)
    return execution


def test_an_upstream_embeddings_call_is_a_run_billed_as_reported(gateway, openai_stub):
    openai_stub.reply(usage=USAGE, model="text-embedding-3-small")

    raw = client(gateway).embeddings.with_raw_response.create(model="text-embedding-3-small", input=TEXTS,
                                                              dimensions=4)
    answer = raw.parse()

    sent = openai_stub.last_request
    assert sent.path == "/v1/embeddings" and sent.body["input"] == TEXTS and sent.body["dimensions"] == 4
    assert [item.embedding for item in answer.data] == [stub_embedding(text, 4) for text in TEXTS]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (11, 11)
    assert Decimal(raw.headers["x-chatter-cost"]) == COST == Decimal(str(answer.usage.model_extra["cost"]))
    assert_recorded(raw.headers["x-request-id"], tokens=11, cost=COST, model="text-embedding-3-small")


def test_floats_or_base64_as_asked(gateway, openai_stub):
    openai_stub.reply(usage=USAGE).reply(usage=USAGE)
    keyed = {"Authorization": f"Bearer {gateway.key}"}

    # The server's first call loads the provider's client: as long as the other tests' clients wait (30 s), not 5.
    floats = httpx.post(f"{gateway.v1}/embeddings", headers=keyed, timeout=30, json={
        "model": "text-embedding-3-small", "input": "hello", "encoding_format": "float"}).json()
    encoded = httpx.post(f"{gateway.v1}/embeddings", headers=keyed, timeout=30, json={
        "model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"}).json()

    assert floats["data"][0]["embedding"] == stub_embedding("hello")
    assert isinstance(encoded["data"][0]["embedding"], str)
    # Both asked the provider for floats (base64 is encoded here).
    assert [request.body["encoding_format"] for request in openai_stub.requests
            if request.path.endswith("/embeddings")] == ["float", "float"]


def test_the_async_client_and_langchain_embed_alike(gateway, openai_stub):
    openai_stub.reply(usage=USAGE).reply(usage=USAGE)

    async def embed():
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0) as aclient:
            return await aclient.embeddings.create(model="text-embedding-3-small", input=TEXTS)

    answer = asyncio.run(embed())
    vectors = OpenAIEmbeddings(model="text-embedding-3-small", base_url=gateway.v1, api_key=gateway.key,
                               check_embedding_ctx_length=False, max_retries=0).embed_documents(TEXTS)

    expected = [stub_embedding(text) for text in TEXTS]
    assert [pytest.approx(item.embedding) for item in answer.data] == expected  # base64 float32: approximately
    assert [pytest.approx(vector) for vector in vectors] == expected
    assert WorkflowExecution.objects.filter(workflow_type="gateway", status="completed", total_tokens=11).count() == 2


def test_the_local_model_embeds_offline_deterministically(shared_daphne_server, alice):
    # No upstream configured, the offline `local` model the default: tests/test_readme's server's environment, so
    # the two share one daphne.
    server = shared_daphne_server(OPENAI_API_KEY="", OPENAI_BASE_URL="", ANTHROPIC_API_KEY="",
                                  CHATTER_DEFAULT_PROVIDER="local", CHATTER_DEFAULT_MODEL="")
    key = ApiTokenFactory(user=alice, scopes=["gateway"]).key
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)

    assert "local-embed-1" in {model.id for model in api.models.list().data}
    raw = api.embeddings.with_raw_response.create(model="local-embed-1", input=["cats and dogs", "dogs and cats",
                                                                                "stock prices"])
    again = api.embeddings.create(model="local-embed-1", input="cats and dogs", dimensions=64)

    first, same_words, other = (item.embedding for item in raw.parse().data)
    assert len(first) == 256 and len(again.data[0].embedding) == 64
    assert math.isclose(math.fsum(x * x for x in first), 1, rel_tol=1e-5)
    assert first == pytest.approx(same_words) and first != pytest.approx(other)
    tokens = raw.parse().usage.prompt_tokens
    assert tokens > 0  # the offline estimator's count, billed at the local model's simulated price ($0.50 / M)
    assert_recorded(raw.headers["x-request-id"], tokens=tokens, model="local-embed-1",
                    cost=(Decimal(tokens) * Decimal("0.50") / 10**6).quantize(Decimal("0.00000001")))


def test_the_local_model_gives_a_text_whose_words_leave_no_direction_the_zero_vector(gateway_api):
    """As documented (docs/api/gateway.md#embeddings): unit length, except all zeros for a text with no word, or whose
    words cancel out in their buckets ("w1 w185": each word's bucket and sign are fixed, so every vector stored
    so far stays what the model gives)."""
    response = gateway_api.post("/v1/embeddings", {"model": "local-embed-1", "input": [
        "???", "🙂👍", "w1 w185", "kettle", "Kettles boil water quickly."]}, format="json")

    no_word, emoji, cancelled, kettle, sentence = (item["embedding"] for item in response.json()["data"])
    assert no_word == emoji == cancelled == [0.0] * 256
    assert kettle == [1.0 if index == 24 else 0.0 for index in range(256)]
    assert math.isclose(math.fsum(x * x for x in sentence), 1, rel_tol=1e-9)
    assert response.json()["usage"]["prompt_tokens"] > 0  # each text read and billed, a zero vector's too


def test_embeddings_count_in_analytics_and_budgets(gateway, openai_stub, alice):
    openai_stub.reply(usage=USAGE, model="text-embedding-3-small")
    client(gateway).embeddings.create(model="text-embedding-3-small", input=TEXTS)
    reader = ApiTokenFactory(user=alice, scopes=["read"]).key

    rows = httpx.get(f"{gateway.base_url}/api/v1/analytics/usage/?group_by=model",
                     headers={"Authorization": f"Bearer {reader}"}).json()["results"]
    BudgetFactory(owner=alice, period="month", limit_usd=COST, mode="hard")
    with pytest.raises(openai.RateLimitError) as refused:
        client(gateway).embeddings.create(model="text-embedding-3-small", input=TEXTS)

    (row,) = rows
    assert (row["model"], row["executions"], row["llm_calls"]) == ("text-embedding-3-small", 1, 1)
    assert (row["prompt_tokens"], row["completion_tokens"], Decimal(row["cost"])) == (11, 0, COST)
    assert refused.value.code == "budget_exceeded" and len(openai_stub.requests) == 1


def test_an_upstream_failure_is_a_502_with_the_run_failed(gateway, openai_stub):
    openai_stub.reply(status=500)

    with pytest.raises(openai.InternalServerError) as failed:
        client(gateway).embeddings.create(model="text-embedding-3-small", input="x")

    execution = WorkflowExecution.objects.get(pk=failed.value.response.headers["x-request-id"])
    assert (failed.value.status_code, execution.status, execution.error_type) == (502, "failed", "provider_error")


def test_another_user_does_not_see_the_run(gateway, openai_stub, bob):
    openai_stub.reply(usage=USAGE)
    raw = client(gateway).embeddings.with_raw_response.create(model="text-embedding-3-small", input="x")
    bobs = ApiTokenFactory(user=bob, scopes=["read"]).key

    seen = httpx.get(f"{gateway.base_url}/api/v1/executions/{raw.headers['x-request-id']}/",
                     headers={"Authorization": f"Bearer {bobs}"})

    assert seen.status_code == 404




BAD = {
    "no input": ({}, "input"),
    "an empty text": ({"input": ""}, "input"),
    "an empty list": ({"input": []}, "input"),
    "a number": ({"input": 5}, "input"),
    "a list mixing texts and objects": ({"input": ["a", {"b": 1}]}, "input"),
    "negative tokens": ({"input": [[1, -2]]}, "input"),
    "an unknown encoding": ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    "zero dimensions": ({"input": "a", "dimensions": 0}, "dimensions"),
    "an unknown field": ({"input": "a", "truncate": True}, "truncate"),
}


@pytest.mark.parametrize("fields, param", BAD.values(), ids=BAD.keys())
def test_bad_input_is_a_400_naming_the_param_and_no_run(gateway_api, fields, param):
    response = gateway_api.post("/v1/embeddings", {"model": "local-embed-1", **fields}, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert not WorkflowExecution.objects.exists()


def test_an_unknown_model_is_a_404_and_no_run(gateway_api):
    response = gateway_api.post("/v1/embeddings", {"model": "embed-99", "input": "a"}, format="json")

    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert not WorkflowExecution.objects.exists()


def test_a_chat_model_is_a_400_naming_the_model_and_no_run(gateway_api):
    """The local provider's local-echo-1 is a chat model: it has no embeddings API (engine.embedding_models)."""
    response = gateway_api.post("/v1/embeddings", {"model": "local/local-echo-1", "input": "a"}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == "model" and "local/local-echo-1 has no embeddings API" in error["message"], error
    assert not WorkflowExecution.objects.exists()
