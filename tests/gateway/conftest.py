"""The gateway's tests share a server whose `openai` provider is the OpenAI stub, and alice's gateway key."""
import openai
import pytest

from tests.factories import ApiTokenFactory


@pytest.fixture
def gateway(daphne_server, openai_stub, alice):
    """A server whose `openai` provider is the stub, and alice's key with the gateway scope only."""
    server = daphne_server(OPENAI_BASE_URL=openai_stub.base_url, OPENAI_API_KEY="sk-upstream-not-a-real-key",
                           CHATTER_PROVIDER_MAX_RETRIES="0")
    server.key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key
    server.v1 = f"{server.base_url}/v1"
    return server


def client(gateway, **kwargs) -> openai.OpenAI:
    """OpenAI's own Python client, pointed at the gateway with alice's key."""
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30, **kwargs)
