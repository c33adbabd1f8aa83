import pytest

from chatter_project.tokens import api_token_create


@pytest.fixture
def alice_key(alice) -> str:
    return api_token_create(user=alice)[1]


@pytest.fixture
def bob_key(bob) -> str:
    return api_token_create(user=bob)[1]


@pytest.fixture
def server(daphne_server):
    """A real daphne server; the SDK's base URL is its /langgraph/."""
    started = daphne_server()
    started.langgraph_url = f"{started.base_url}/langgraph"
    return started
