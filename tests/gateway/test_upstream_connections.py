"""The gateway keeps its upstream connection: calls one after another, whole or streamed, go over one kept-alive
connection to an upstream that keeps connections open (as OpenAI's servers do), and each is still a run billed
exactly as the upstream reported."""
import pytest

from tests.factories import ApiTokenFactory
from tests.gateway.conftest import client
from tests.invariants import assert_all
from tests.openai_stub import OpenAIStub
from workflows.models import WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
ASK = [{"role": "user", "content": "What is 12*7?"}]


@pytest.fixture
def kept_alive_gateway(daphne_server, alice):
    with OpenAIStub(keep_alive=True) as upstream:
        server = daphne_server(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="sk-upstream-not-a-real-key",
                               CHATTER_PROVIDER_MAX_RETRIES="0")
        server.key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key
        server.v1 = f"{server.base_url}/v1"
        server.upstream = upstream
        yield server


def test_calls_in_a_row_share_one_upstream_connection_and_each_is_billed(kept_alive_gateway):
    upstream = kept_alive_gateway.upstream
    upstream.always(content="84.", usage=USAGE)
    gateway = client(kept_alive_gateway)

    ids = []
    for _ in range(3):
        raw = gateway.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
        assert raw.parse().choices[0].message.content == "84."
        ids.append(raw.headers["x-chatter-execution"])
        with gateway.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}) as streamed:
            chunks = list(streamed.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "84."
        assert chunks[-1].usage.total_tokens == 30
        ids.append(streamed.headers["x-chatter-execution"])

    # one connection for the calls (the pass-through's pool), one for the listing of the models the upstream serves
    # (read once a minute, by the client of the provider adapters)
    assert upstream.connections == 2
    assert len(upstream.requests) == 6
    for execution in WorkflowExecution.objects.filter(pk__in=ids):
        assert execution.status == "completed", execution.error_message
        assert (execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) == (21, 9, 30)
        assert_all(execution)
    assert WorkflowExecution.objects.filter(pk__in=ids).count() == 6
