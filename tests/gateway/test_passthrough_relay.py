"""A pass-through stream (gateway.relay) as the client reads it: the run's id in place of the upstream's in each
chunk's `id` field and nowhere else; a run cancelled mid-stream ends at its next chunk, recorded; an upstream that
hangs up mid-stream has every chunk it sent relayed, then the error."""
import json

import httpx
import openai
import pytest

from engine.usage import estimate_tokens

from tests.factories import ApiTokenFactory
from tests.gateway.conftest import client
from tests.gateway.test_passthrough import ASK, USAGE, assert_recorded
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution


def test_only_the_id_field_of_a_chunk_becomes_the_runs_id(gateway, openai_stub):
    text = 'Order 1 of 11 items, id "1", 1'
    openai_stub.reply(content=text, usage=USAGE, completion_id="1")

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True) as raw:
        chunks = list(raw.parse())  # (each chunk JSON the client reads)
        execution_id = raw.headers["x-chatter-execution"]

    assert {chunk.id for chunk in chunks} == {f"chatcmpl-{execution_id.replace('-', '')}"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert assert_recorded(execution_id).output_data["content"] == text


def test_a_stream_cancelled_mid_way_ends_cancelled_at_its_next_chunk_with_what_it_streamed(gateway, openai_stub, alice):
    words = " ".join(f"word{i}" for i in range(60))
    openai_stub.reply(content=words, usage=USAGE, chunk_delay_s=0.05)  # 3 s of stream, the usage at its end
    owner = httpx.Client(base_url=gateway.base_url, timeout=30,
                         headers={"Authorization": f"Bearer {ApiTokenFactory(user=alice, name='runs').key}"})

    with httpx.stream("POST", f"{gateway.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "gpt-4o-mini", "messages": ASK, "stream": True,
                            "stream_options": {"include_usage": True}}) as response:
        execution_id = response.headers["x-chatter-execution"]
        frames = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                frames.append(line[6:])
                if len(frames) == 5:  # once: the blank line after a frame must not ask again
                    assert owner.post(f"/api/v1/executions/{execution_id}/cancel/").status_code == 200

    assert "[DONE]" not in frames
    error = json.loads(frames[-1])["error"]
    assert error["code"] == "cancelled" and execution_id in error["message"]
    streamed = "".join(json.loads(frame)["choices"][0]["delta"].get("content") or "" for frame in frames[:-1])
    assert words.startswith(streamed) and len(streamed) < len(words) / 2  # stopped within a few chunks
    run = WorkflowExecution.objects.get(pk=execution_id)
    assert (run.status, run.error_type, run.llm_calls) == ("cancelled", "cancelled", 1)
    (call,) = LLMCall.objects.filter(execution=run)  # what it streamed, estimated: the upstream never said
    assert call.estimated and call.total_tokens == run.total_tokens > 0 and run.output_data["content"] == streamed
    assert_all(run)


def test_the_chunks_an_upstream_sent_at_once_before_it_hung_up_are_relayed_before_the_error(gateway, openai_stub):
    """aiohttp drops what it holds of a body unread once the connection fails: the chunks an upstream sent in one
    burst just before it hung up, read only after the relay was set up, were lost, and the client got the error alone
    (and the call was accounted for none of their text)."""
    words = [f"word{i} " for i in range(5)]
    openai_stub.reply(content="".join(words), usage=USAGE, fault="burst", fault_after=1 + len(words))  # role, words

    chunks = []
    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True) as raw:
        execution_id = raw.headers["x-chatter-execution"]
        with pytest.raises(openai.APIError) as failed:
            for chunk in raw.parse():
                chunks.append(chunk)

    assert [chunk.choices[0].delta.content for chunk in chunks if chunk.choices[0].delta.content] == words
    assert execution_id in failed.value.message
    execution = assert_recorded(execution_id, estimated=True)  # what it produced, estimated: no usage came
    assert (execution.status, execution.error_type) == ("failed", "provider_error")
    assert execution.output_data["content"] == "".join(words)
    assert execution.completion_tokens == estimate_tokens("".join(words))
