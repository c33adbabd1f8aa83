"""The gateway in front of a real model server: llama.cpp's own server with SmolLM2-135M (tests/llama_server.py) as the
`openai` provider's upstream, called with OpenAI's own client as a team would: a call, a streamed call with its
usage chunk, and a streamed Responses call. What is checked is accounting, never the wording: what the server itself
counted (its Prometheus counters of prompt tokens processed, taken from its cache, generated) is what Chatter stored
for each call and what the client was told, with the cost at Chatter's price.

The server serves its model file's path (no --alias) and answers any name with it, so the client asks for that name,
which has a price here (the gateway refuses a priced model the server does not serve: tests/gateway/
test_usage_and_cost.py)."""
import re
from decimal import Decimal
from io import StringIO

import openai
import pytest
from django.core.management import call_command

from tests.api.test_chat_llama_server import PRICE, counted_by_server
from tests.factories import ApiTokenFactory, ModelPriceFactory
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
ASK = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def assert_counted(execution_id, *, told: tuple[int, int, int], cost, counted: dict) -> WorkflowExecution:
    """The call stored what the server counted, and the client was told the same (prompt, completion and cached
    prompt tokens; the cost at Chatter's price)."""
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "completed", execution.error_message
    (call,) = LLMCall.objects.filter(execution=execution)
    stored = (call.prompt_tokens, call.completion_tokens, call.cached_prompt_tokens)
    assert stored == told == (counted["prompt_tokens"], counted["completion_tokens"], counted["cached_prompt_tokens"])
    assert (execution.prompt_tokens, execution.completion_tokens) == stored[:2] and not call.estimated
    expected = ((call.prompt_tokens - call.cached_prompt_tokens) * PRICE["input_per_million"]
                + call.cached_prompt_tokens * PRICE["cached_input_per_million"]
                + call.completion_tokens * PRICE["output_per_million"]) / 10**6
    assert Decimal(str(cost)) == execution.cost == call.cost == expected.quantize(Decimal("0.00000001")) > 0
    assert_all(execution)
    return execution


def test_gateway_calls_store_exactly_what_the_real_server_counted(llama_server, shared_daphne_server, alice):
    (served,) = llama_server.models()
    ModelPriceFactory(provider="openai", model_pattern=re.escape(served), **PRICE)
    # tests/api/test_chat_llama_server's server too: one daphne for both modules
    server = shared_daphne_server(OPENAI_BASE_URL=llama_server.base_url, OPENAI_API_KEY="sk-test-not-a-real-key")
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=ApiTokenFactory(user=alice, scopes=["gateway"]).key,
                        max_retries=0, timeout=120)
    asked = {"model": served, "temperature": 0}

    # 1. A call.
    before = llama_server.metrics()
    raw = api.chat.completions.with_raw_response.create(messages=ASK, max_tokens=16, **asked)
    usage = raw.parse().usage
    assert_counted(raw.headers["x-request-id"], told=(
        usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens),
        cost=raw.headers["x-chatter-cost"], counted=counted_by_server(before, llama_server.metrics()))

    # 2. The same prompt streamed, with its usage chunk: the server takes it from its cache this time.
    before = llama_server.metrics()
    with api.chat.completions.with_streaming_response.create(
            messages=ASK, max_tokens=16, stream=True, stream_options={"include_usage": True}, **asked) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]
    usage = chunks[-1].usage
    counted = counted_by_server(before, llama_server.metrics())
    execution = assert_counted(request_id, told=(
        usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens),
        cost=usage.model_extra["cost"], counted=counted)
    assert counted["cached_prompt_tokens"] > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == execution.output_data["content"]

    # 3. A streamed Responses call.
    before = llama_server.metrics()
    with api.responses.stream(input=ASK, max_output_tokens=16, **asked) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        response = stream.get_final_response()
    usage = response.usage
    execution = assert_counted(response.id.removeprefix("resp_"), told=(
        usage.input_tokens, usage.output_tokens, usage.input_tokens_details.cached_tokens),
        cost=usage.model_extra["cost"], counted=counted_by_server(before, llama_server.metrics()))
    assert text == response.output_text == execution.output_data["content"] != ""
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 1 (SystemExit) on any drift
