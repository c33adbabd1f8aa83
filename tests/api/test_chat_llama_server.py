"""Chat turns through the public API against a real model server: llama.cpp's own server with SmolLM2-135M
(tests/llama_server.py), reached by the `openai` provider as any OpenAI-compatible server is.

What is checked is accounting, never the reply's wording: every figure the server itself counted (its Prometheus
counters of prompt tokens processed, prompt tokens taken from its cache, tokens generated) equals what Chatter
stored for the calls it made, each call's row equals the usage object the server sent, and the cost is the
price of the model asked for. The server runs without --alias, so it reports its model file's path as the
model: the call records that name and is priced (and re-priced) by the one requested.

A tool turn is not among them: at temperature 0 this small model answers "What is 12*7?" in words, with no
tool call. The turns: a sync turn, then a streamed (SSE) turn in the same conversation, whose prompt carries
the first turn (memory) and so starts with what the server has cached.
"""
from decimal import Decimal
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from conversations.models import Message
from tests.api.sse import SSEParser
from tests.factories import ApiTokenFactory, ModelPriceFactory
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

URL = "/api/v1/chat/"
MODEL = "smollm2-135m"  # the name Chatter asks for; the server answers under its file's path
TURN = {"provider": "openai", "model": MODEL, "temperature": 0, "max_tokens": 16, "enable_tools": False}
PRICE = {"input_per_million": Decimal("1.00"), "cached_input_per_million": Decimal("0.50"),
         "output_per_million": Decimal("2.00")}


def counted_by_server(before: dict, after: dict) -> dict:
    """What the server counted between two reads of its metrics, as usage fields."""
    processed = after["llamacpp:prompt_tokens_total"] - before["llamacpp:prompt_tokens_total"]
    cached = after["llamacpp:prompt_tokens_cached_total"] - before["llamacpp:prompt_tokens_cached_total"]
    generated = after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"]
    return {"prompt_tokens": int(processed + cached), "cached_prompt_tokens": int(cached),
            "completion_tokens": int(generated)}


def stored_for(execution_id) -> tuple[WorkflowExecution, list[LLMCall]]:
    execution = WorkflowExecution.objects.select_related("conversation").get(pk=execution_id)
    return execution, list(LLMCall.objects.filter(execution=execution).order_by("id"))


def assert_accounted(execution, calls, *, counted: dict, reported_model: str) -> None:
    """The server's counts are the stored calls' sums; each call is its own report, priced by the model asked for;
    the execution, its reply and the conversation agree (I1–I3)."""
    assert execution.status == "completed", execution.error_message
    assert calls, "no LLM call was recorded"
    assert {name: sum(getattr(call, name) for call in calls) for name in counted} == counted
    for call in calls:
        raw = call.usage_raw
        assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (
            raw["prompt_tokens"], raw["completion_tokens"], raw["total_tokens"])
        assert call.cached_prompt_tokens == raw.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        assert (call.estimated, call.provider_cost, call.unpriced) == (False, False, False)
        assert (call.provider, call.model, call.requested_model) == ("openai", reported_model, MODEL)
        uncached = call.prompt_tokens - call.cached_prompt_tokens
        expected = (uncached * PRICE["input_per_million"] + call.cached_prompt_tokens
                    * PRICE["cached_input_per_million"] + call.completion_tokens * PRICE["output_per_million"])
        assert call.cost == (expected / 10**6).quantize(Decimal("0.00000001")) > 0
    reply = Message.objects.get(execution=execution, role="assistant")
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens", "cost"):
        assert getattr(reply, field) == sum(getattr(call, field) for call in calls), field
    assert execution.total_tokens == reply.total_tokens and execution.cost == reply.cost
    assert (reply.provider_used, reply.model_used, reply.usage_estimated) == ("openai", reported_model, False)
    assert_all(execution)


@pytest.mark.django_db(transaction=True)
def test_real_turns_store_exactly_the_usage_the_server_counted(llama_server, shared_daphne_server, alice):
    ModelPriceFactory(provider="openai", model_pattern=MODEL, effective_from=timezone.now(), **PRICE)
    (reported_model,) = llama_server.models()
    assert reported_model != MODEL and reported_model.endswith(".gguf")  # no --alias: the file's path
    # tests/gateway/test_llama_server's server too: one daphne for both modules
    server = shared_daphne_server(OPENAI_BASE_URL=llama_server.base_url, OPENAI_API_KEY="sk-test-not-a-real-key")
    auth = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}
    client = httpx.Client(base_url=server.base_url, headers=auth, timeout=120)

    # 1. A sync turn.
    before = llama_server.metrics()
    response = client.post(URL, json={"message": "What is the capital of France?", **TURN})
    assert response.status_code == 201, response.text
    first, first_calls = stored_for(response.json()["execution"]["id"])
    assert_accounted(first, first_calls, counted=counted_by_server(before, llama_server.metrics()),
                     reported_model=reported_model)
    assert response.json()["execution"]["cost"] == str(first.cost)

    # 2. A streamed turn in the same conversation: its prompt carries the first turn, which the server has cached.
    before = llama_server.metrics()
    parser, frames = SSEParser(), []
    body = {"message": "And of Italy?", "conversation_id": str(first.conversation_id), "stream": True, **TURN}
    with client.stream("POST", URL, json=body) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"] == "text/event-stream"
        frames = [frame for line in streamed.iter_lines() if (frame := parser.feed_line(line)) is not None]
    second, second_calls = stored_for(frames[0].envelope["execution_id"])
    counted = counted_by_server(before, llama_server.metrics())
    assert_accounted(second, second_calls, counted=counted, reported_model=reported_model)
    assert counted["cached_prompt_tokens"] > 0  # the server reused the first turn's prompt: memory was sent
    assert counted["prompt_tokens"] > first_calls[0].prompt_tokens
    reply = Message.objects.get(execution=second, role="assistant")
    assert "".join(f.envelope["data"]["text"] for f in frames if f.event == "token") == reply.content
    done = frames[-1].envelope
    assert done["event"] == "workflow_completed"
    assert (done["data"]["total_tokens"], Decimal(done["data"]["cost"])) == (second.total_tokens, second.cost)
    usage_events = [f.envelope["data"] for f in frames if f.event == "token_usage"]
    assert [(e["prompt_tokens"], e["completion_tokens"], e["cached_prompt_tokens"], e["model"]) for e in usage_events] \
        == [(c.prompt_tokens, c.completion_tokens, c.cached_prompt_tokens, c.model) for c in second_calls]
    conversation = second.conversation
    assert (conversation.message_count, conversation.total_cost) == (4, first.cost + second.cost)

    # 3. Re-pricing finds the price of the model asked for, not of the file's path: nothing changes, nothing is 0.
    out, err = StringIO(), StringIO()
    call_command("recompute_costs", stdout=out, stderr=err)
    assert ("re-priced 0 LLM calls" in out.getvalue(), err.getvalue()) == (True, "")
    for execution, calls in ((first, first_calls), (second, second_calls)):
        repriced, repriced_calls = stored_for(execution.pk)
        assert [c.cost for c in repriced_calls] == [c.cost for c in calls]
        assert repriced.cost == execution.cost > 0
        assert_all(repriced)
    assert "Traceback" not in server.log.read_text()
