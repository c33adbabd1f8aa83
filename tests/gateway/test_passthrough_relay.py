"""A pass-through stream (gateway.relay) as the client reads it: the run's id in place of the upstream's in each
chunk's `id` field and nowhere else; a run cancelled mid-stream ends at its next chunk, recorded."""
import json

import httpx

from tests.gateway.conftest import client
from tests.gateway.test_passthrough import ASK, USAGE, assert_recorded


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
