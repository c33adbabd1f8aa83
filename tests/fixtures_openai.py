"""The `openai_stub` fixture: a started OpenAIStub (tests/openai_stub.py), stopped after the test; and
`openai_server`: the same stub with the `openai` provider pointed at it.

`session_openai_stub` is one stub for the whole session (each pytest-xdist worker has its own), reset at the start
and end of every test that uses it: the upstream of the servers tests share (tests/fixtures_server.py
`shared_daphne_server`), whose environment names its URL once. The folders whose servers are shared make it their
`openai_stub` (tests/gateway/conftest.py, tests/agent_server/conftest.py).

Registered for the whole suite with `pytest_plugins = ["tests.fixtures_openai"]` in tests/conftest.py.
"""
import pytest

from tests.openai_stub import OpenAIStub


@pytest.fixture
def openai_stub():
    with OpenAIStub() as stub:
        yield stub


@pytest.fixture(scope="session")
def _openai_stub_of_session():
    with OpenAIStub() as stub:
        yield stub


@pytest.fixture
def session_openai_stub(_openai_stub_of_session):
    yield _openai_stub_of_session.reset()
    _openai_stub_of_session.reset()


@pytest.fixture
def openai_server(openai_stub, settings):
    """The stub as the `openai` provider's server (OPENAI_BASE_URL), with a fake key."""
    settings.OPENAI_BASE_URL = openai_stub.base_url
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    return openai_stub
