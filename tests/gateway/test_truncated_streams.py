"""An upstream stream that ends without a word of why (no finish reason, no `[DONE]`) was cut short: on the
pass-through and the run path alike, the call fails `provider_error`, the stream ends with the error object, and what
it streamed is recorded, its usage estimated and flagged."""
import json

import httpx
import pytest

from tests.factories import ConversationFactory
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
