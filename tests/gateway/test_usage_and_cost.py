"""What a gateway call cost comes back to the client as Chatter stored it: `usage` with its details (cached prompt
tokens, reasoning tokens), the cost in `usage.cost` and (a call not streamed) in X-Chatter-Cost and x-litellm-response-cost, and the run's id in
X-Request-Id; and the models a client may ask for: /v1/models and /v1/models/{id} list what an upstream serves."""
from decimal import Decimal

import openai
import pytest

from tests.gateway.conftest import client
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

ASK = [{"role": "user", "content": "Think, then say 84."}]
# gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million (analytics' seeded prices)
USAGE = {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
         "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 16, "audio_tokens": 0}}
COST = ((Decimal(176) * Decimal("0.15") + Decimal(1024) * Decimal("0.075") + Decimal(40) * Decimal("0.60"))
        / 10**6).quantize(Decimal("0.00000001"))


def assert_as_stored(usage, execution_id) -> None:
    execution = WorkflowExecution.objects.get(pk=execution_id)
    (call,) = LLMCall.objects.filter(execution=execution)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 40, 1240) == (
        execution.prompt_tokens, execution.completion_tokens, execution.total_tokens)
    assert usage.prompt_tokens_details.cached_tokens == call.cached_prompt_tokens == 1024
    assert usage.completion_tokens_details.reasoning_tokens == call.reasoning_tokens == 16
    assert Decimal(str(usage.model_extra["cost"])) == execution.cost == call.cost == COST
    assert_all(execution)


def test_a_call_returns_its_cached_tokens_and_cost_as_stored(gateway, openai_stub):
    openai_stub.reply(content="84.", usage=USAGE)

    raw = client(gateway).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)

    completion = raw.parse()
    assert raw.headers["x-request-id"] == raw.headers["x-chatter-execution"]
    assert_as_stored(completion.usage, raw.headers["x-request-id"])
    assert Decimal(raw.headers["x-chatter-cost"]) == COST and raw.headers["x-chatter-cost"] == f"{COST:.8f}"
    assert raw.headers["x-litellm-response-cost"] == raw.headers["x-chatter-cost"]  # where LiteLLM's SDK reads it


def test_a_streamed_call_ends_with_its_usage_details_and_cost(gateway, openai_stub):
    openai_stub.reply(content="It is 84.", usage=USAGE)

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]

    assert chunks[-1].choices == []
    assert_as_stored(chunks[-1].usage, request_id)


def test_a_call_without_details_says_zero(gateway, openai_stub):
    openai_stub.reply(content="84.", usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})

    usage = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK).usage

    assert (usage.prompt_tokens_details.cached_tokens, usage.completion_tokens_details.reasoning_tokens) == (0, 0)
    assert Decimal(str(usage.model_extra["cost"])) == WorkflowExecution.objects.get().cost > 0


def test_a_failed_call_says_what_it_cost_and_which_run_it_was(gateway, openai_stub):
    openai_stub.reply(status=500, error_body={"error": {"message": "down", "type": "server_error", "code": None,
                                                        "param": None}})

    with pytest.raises(openai.APIStatusError) as failed:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    headers = failed.value.response.headers
    execution = WorkflowExecution.objects.get(pk=headers["x-request-id"])
    assert execution.status == "failed" and Decimal(headers["x-chatter-cost"]) == execution.cost == 0


# --- the models there are ---------------------------------------------------------------------------------------
def test_a_model_is_read_by_its_id(gateway):
    api = client(gateway)

    served = api.models.retrieve("gpt-4o-mini")
    local = api.models.retrieve("local-echo-1")
    prefixed = api.models.retrieve("openai/gpt-4o")

    assert (served.id, served.owned_by, served.object) == ("gpt-4o-mini", "openai", "model") and served.created > 0
    assert (local.id, local.owned_by) == ("local-echo-1", "local")
    assert (prefixed.id, prefixed.owned_by) == ("openai/gpt-4o", "openai")


# A server reads the upstream's model list once a minute: this test's list needs a server of its own.
@pytest.mark.own_server
def test_a_priced_model_the_upstream_does_not_serve_is_not_found_and_not_called(gateway, openai_stub):
    openai_stub.served_models = ["SmolLM2-135M-Instruct"]  # a llama.cpp server: it answers any name with its model

    with pytest.raises(openai.NotFoundError) as listed:
        client(gateway).models.retrieve("gpt-4o-mini")
    with pytest.raises(openai.NotFoundError) as called:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    for refused in (listed, called):
        assert (refused.value.code, refused.value.param) == ("model_not_found", "model")
        assert "`gpt-4o-mini` is priced, but openai's server does not serve it" in refused.value.message
    assert [m.id for m in client(gateway).models.list().data] == ["all-MiniLM-L6-v2", "local-echo-1", "local-embed-1"]
    assert not openai_stub.requests and not WorkflowExecution.objects.exists()


def test_an_unknown_model_is_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as unknown:
        client(gateway).models.retrieve("gpt-99-imaginary")

    assert unknown.value.code == "model_not_found" and "gpt-99-imaginary" in unknown.value.message


def test_reading_a_model_needs_a_key_with_the_gateway_scope(gateway):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.v1, api_key="not-a-key", max_retries=0).models.retrieve("gpt-4o-mini")
