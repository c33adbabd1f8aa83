"""The gateway's tests share a server whose `openai` provider is the OpenAI stub, and alice's gateway key; and, for
what needs no upstream, Django's test client with that key, out of the box (the offline `local` provider only)."""
import openai
import pytest
from rest_framework.test import APIClient

from tests.factories import ApiTokenFactory


@pytest.fixture
def openai_stub(session_openai_stub):
    """The session's stub: the gateway server's upstream, as its environment names it."""
    return session_openai_stub


@pytest.fixture
def gateway(shared_daphne_server, openai_stub, alice):
    """A server whose `openai` provider is the stub (shared: tests/fixtures_server.py SharedServers), and alice's key
    with the gateway scope only."""
    server = shared_daphne_server(OPENAI_BASE_URL=openai_stub.base_url, OPENAI_API_KEY="sk-upstream-not-a-real-key",
                                  CHATTER_PROVIDER_MAX_RETRIES="0")
    server.key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key
    server.v1 = f"{server.base_url}/v1"
    return server


def client(gateway, **kwargs) -> openai.OpenAI:
    """OpenAI's own Python client, pointed at the gateway with alice's key."""
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30, **kwargs)


@pytest.fixture
def gateway_api(alice, settings):
    """Django's test client with alice's gateway key; only the offline `local` provider set up (no upstream)."""
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = None
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['gateway']).key}")
    return api
