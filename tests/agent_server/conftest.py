from pathlib import Path

import pytest

from tests.factories import ApiTokenFactory

GRAPHS = Path(__file__).parent / "graphs" / "langgraph.json"


@pytest.fixture
def alice_key(alice) -> str:
    return ApiTokenFactory(user=alice).key


@pytest.fixture
def bob_key(bob) -> str:
    return ApiTokenFactory(user=bob).key


@pytest.fixture
def openai_stub(session_openai_stub):
    """The session's stub: graph_server's upstream, as its environment names it."""
    return session_openai_stub


@pytest.fixture
def server(shared_daphne_server):
    """A real daphne server (shared: tests/fixtures_server.py SharedServers); the SDK's base URL is its /langgraph/."""
    started = shared_daphne_server()
    started.langgraph_url = f"{started.base_url}/langgraph"
    return started


@pytest.fixture
def graph_server(shared_daphne_server, openai_stub):
    """A real daphne server (shared) serving the sample Python graphs (CHATTER_GRAPHS), their model the fake OpenAI
    server."""
    server = shared_daphne_server(CHATTER_GRAPHS=str(GRAPHS), OPENAI_BASE_URL=openai_stub.base_url,
                                  OPENAI_API_KEY="sk-test-not-a-real-key")
    server.langgraph_url = f"{server.base_url}/langgraph"
    return server


def reconcile_exit_code() -> int:
    """`manage.py reconcile_aggregates`: 0 when every aggregate equals its source rows (I1, I2)."""
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    try:
        call_command("reconcile_aggregates", stdout=out, stderr=out)
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.fixture
def server_with_webhooks(shared_daphne_server):
    """A real daphne server (shared) that signs webhooks (CHATTER_WEBHOOK_SECRET set, as the test receiver expects) and
    allows them to the test receivers' address."""
    from tests.webhook_receiver import RECEIVER_NETWORK, SECRET

    started = shared_daphne_server(CHATTER_WEBHOOK_SECRET=SECRET, CHATTER_WEBHOOK_ALLOWED_NETWORKS=RECEIVER_NETWORK)
    started.langgraph_url = f"{started.base_url}/langgraph"
    return started
