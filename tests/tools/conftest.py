import ipaddress

import pytest
from rest_framework.test import APIClient

from tests.factories import ApiTokenFactory

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)  # where the test MCP server listens


# A daphne server's environment for the tools over HTTP: loopback allowed (the test MCP servers listen there) and
# the offline `local` model, as docs/tools.md's walk-through asks; one shared server for the modules that use it.
LOOPBACK_SERVER_ENV = {"CHATTER_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32", "OPENAI_API_KEY": "",
                       "ANTHROPIC_API_KEY": "", "CHATTER_DEFAULT_PROVIDER": "local", "CHATTER_DEFAULT_MODEL": ""}


@pytest.fixture
def loopback_server(shared_daphne_server):
    return shared_daphne_server(**LOOPBACK_SERVER_ENV)


@pytest.fixture
def loopback_allowed(settings):
    """The test MCP server (on 127.0.0.1) allowed as an operator allows an internal tool server."""
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = LOOPBACK


def client_with_key(user, scopes=("tools",)) -> APIClient:
    """An API client holding a real key of `user` with `scopes`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ApiTokenFactory(user=user, name='t', scopes=list(scopes)).key}")
    return client


@pytest.fixture
def alice_client(alice):
    return client_with_key(alice)


@pytest.fixture
def bob_client(bob):
    return client_with_key(bob)


@pytest.fixture
def staff_client(staff):
    return client_with_key(staff)
