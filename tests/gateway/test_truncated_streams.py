"""An upstream that answers short. A stream that ends without a word of why (no finish reason, no `[DONE]`) was cut
short: on the pass-through and the run path alike, the call fails `provider_error`, the stream ends with the error
object, and what it streamed is recorded, its usage estimated and flagged. An answer with no choice is recorded with
the usage it reported."""
import json

import httpx
import openai
import pytest

from tests.factories import ConversationFactory
from tests.gateway.conftest import client
from tests.gateway.test_passthrough import ASK, USAGE
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

WORDS = " ".join(f"word{i}" for i in range(12))


@pytest.mark.parametrize("path", ["pass-through", "run path"])
def test_a_stream_that_ends_short_is_the_providers_failure_recorded_as_far_as_it_went(gateway, openai_stub, alice,
                                                                                      path):
    openai_stub.reply(content=WORDS, usage=USAGE, fault="end", fault_after=4)  # its role chunk, then 3 words
    kept = {"X-Chatter-Conversation": str(ConversationFactory(owner=alice).pk)} if path == "run path" else {}

    with httpx.stream("POST", f"{gateway.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}", **kept},
                      json={"model": "gpt-4o-mini", "messages": ASK, "stream": True}) as response:
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
        execution_id = response.headers["x-request-id"]

    assert json.loads(frames[-1])["error"]["code"] == "provider_error"  # (the run path's then sends [DONE])
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert not any(choice.get("finish_reason") for chunk in chunks for choice in chunk["choices"])
    streamed = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
    assert streamed == "word0 word1 word2 "
    run = WorkflowExecution.objects.get(pk=execution_id)
    assert (run.status, run.error_type, run.llm_calls) == ("failed", "provider_error", 1)
    (call,) = LLMCall.objects.filter(execution=run)
    assert call.estimated and call.completion_tokens > 0 and call.total_tokens == run.total_tokens
    assert_all(run)


@pytest.mark.parametrize("path", ["pass-through", "run path"])
def test_an_answer_with_no_choice_is_recorded_with_its_usage(gateway, openai_stub, alice, path):
    openai_stub.reply(content="unseen", usage=USAGE, no_choices=True)
    kept = {"X-Chatter-Conversation": str(ConversationFactory(owner=alice).pk)} if path == "run path" else {}

    response = httpx.post(f"{gateway.v1}/chat/completions", timeout=30, json={"model": "gpt-4o-mini", "messages": ASK},
                          headers={"Authorization": f"Bearer {gateway.key}", **kept})

    run = WorkflowExecution.objects.get(pk=response.headers["x-request-id"])
    (call,) = LLMCall.objects.filter(execution=run)
    assert (call.total_tokens, call.estimated) == (USAGE["total_tokens"], False) and run.total_tokens == 30
    if path == "pass-through":  # relayed as the upstream gave it
        assert response.status_code == 200 and response.json()["choices"] == []
    else:  # an OpenAI-shaped error: there is no reply to answer
        assert response.status_code == 502 and response.json()["error"]["code"] == "provider_error"
        assert (run.status, run.error_type) == ("failed", "provider_error")
    assert_all(run)


@pytest.mark.parametrize("path", ["pass-through", "run path"])
def test_a_stream_chunk_that_is_not_json_is_the_providers_failure_billed_by_estimate(gateway, openai_stub, alice,
                                                                                     path):
    openai_stub.reply(content=WORDS, usage=USAGE, fault="malformed", fault_after=3)  # its role chunk, then 2 words
    kept = {"X-Chatter-Conversation": str(ConversationFactory(owner=alice).pk)} if path == "run path" else {}
    answer = client(gateway, default_headers=kept).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True})
    seen = []

    with pytest.raises(openai.APIError) as failed:
        for chunk in answer.parse():
            seen.append("".join(choice.delta.content or "" for choice in chunk.choices))

    assert "".join(seen) == "word0 word1 " and failed.value.code == "provider_error"
    run = WorkflowExecution.objects.get(pk=answer.headers["x-request-id"])
    assert (run.status, run.error_type, run.llm_calls) == ("failed", "provider_error", 1)
    (call,) = LLMCall.objects.filter(execution=run)
    assert call.estimated and call.total_tokens == run.total_tokens != USAGE["total_tokens"]
    assert_all(run)
