"""The `openai_stub` fixture: a started OpenAIStub (tests/openai_stub.py), stopped after the test; and
`openai_server`: the same stub with the `openai` provider pointed at it.

Registered for the whole suite with `pytest_plugins = ["tests.fixtures_openai"]` in tests/conftest.py.
"""
import pytest

from tests.openai_stub import OpenAIStub


@pytest.fixture
def openai_stub():
    with OpenAIStub() as stub:
        yield stub


@pytest.fixture
def openai_server(openai_stub, settings):
    """The stub as the `openai` provider's server (OPENAI_BASE_URL), with a fake key."""
    settings.OPENAI_BASE_URL = openai_stub.base_url
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    return openai_stub
