"""The `openai_stub` fixture: a started OpenAIStub (tests/openai_stub.py), stopped after the test.

Registered for the whole suite with `pytest_plugins = ["tests.fixtures_openai"]` in tests/conftest.py.
"""
import pytest

from tests.openai_stub import OpenAIStub


@pytest.fixture
def openai_stub():
    with OpenAIStub() as stub:
        yield stub
