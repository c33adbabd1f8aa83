"""OpenAI's official Node client (`openai`, tests/js/openai_sdk.mjs) against the gateway on a real daphne server,
the project's OpenAI stub upstream: models, a call with logprobs and its cached tokens, a streamed call, a tool round,
embeddings, the Responses API (whole and streamed) and legacy completions, refusals as the client's own error classes; every call that
reached the upstream is a run whose tokens and cost are what the client was told."""
from decimal import Decimal

import pytest

from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from tests.js_clients import run_script
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
CACHED = {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
          "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
          "completion_tokens_details": {"reasoning_tokens": 16, "audio_tokens": 0}}
PLAIN = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
EMBEDDED = {"prompt_tokens": 4, "total_tokens": 4}


def test_openais_node_client_is_served_by_the_gateway_with_exact_usage_and_cost(gateway, openai_stub, node_modules):
    (openai_stub.reply(content="It is 84.", usage=CACHED)
     .reply(content="Streamed 84.", usage=PLAIN)
     .reply(tool_calls=[{"name": "multiply", "arguments": {"a": 12, "b": 7}}], usage=PLAIN)
     .reply(content="84.", usage=PLAIN)
     .reply(usage=EMBEDDED, model="text-embedding-3-small")
     .reply(content="Responded 84.", usage=PLAIN)
     .reply(content="Streamed response 84.", usage=CACHED)
     .reply(content="Completed 84.", usage=PLAIN))

    seen = run_script("openai_sdk.mjs", CHATTER_V1_URL=gateway.v1, CHATTER_KEY=gateway.key)

    assert openai_stub.pending == 0  # every call reached the upstream once
    call = WorkflowExecution.objects.get(pk=seen["call"]["id"])
    (stored,) = LLMCall.objects.filter(execution=call)
    usage = seen["call"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        stored.prompt_tokens, stored.completion_tokens, stored.total_tokens) == (1200, 40, 1240)
    assert usage["prompt_tokens_details"]["cached_tokens"] == stored.cached_prompt_tokens == 1024
    assert usage["completion_tokens_details"]["reasoning_tokens"] == stored.reasoning_tokens == 16
    assert Decimal(seen["call"]["cost"]) == Decimal(str(usage["cost"])) == call.cost == stored.cost > 0
    assert seen["stream"]["usage"]["total_tokens"] == 15 and seen["embeddings"]["total_tokens"] == 4
    assert [u["total_tokens"] for u in seen["tools"]] == [15, 15]
    assert seen["responses"]["usage"]["total_tokens"] == 15 and seen["completions"]["total_tokens"] == 15
    streamed = WorkflowExecution.objects.get(pk=seen["responsesStream"]["id"].removeprefix("resp_"))
    usage = seen["responsesStream"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"]) == (
        streamed.prompt_tokens, streamed.completion_tokens, LLMCall.objects.get(execution=streamed).cached_prompt_tokens
    ) == (1200, 40, 1024)
    assert Decimal(str(usage["cost"])) == streamed.cost == call.cost
    runs = WorkflowExecution.objects.filter(workflow_type="gateway").order_by("created_at")
    # one run per call that reached the upstream: 2 chat calls, the 2 of the tool round, embeddings, 2 responses,
    # legacy
    assert runs.count() == 8 and all(r.status == "completed" for r in runs)
    assert sum(r.total_tokens for r in runs) == 1240 * 2 + 15 * 5 + 4
    for run in runs:
        assert_all(run)
    assert reconcile_exit_code() == 0
