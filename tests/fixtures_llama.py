"""The `llama_server` fixture: llama.cpp's own server with a real small model (tests/llama_server.py), started
once for the session and stopped at its end. It cannot be had (the package or the model missing, the server not
starting): the tests that ask for it error, saying why. Never a skip that reads as a pass.

Registered for the whole suite with `pytest_plugins` in tests/conftest.py.
"""
import pytest

from tests.llama_server import LlamaServer, LlamaServerError


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    server = LlamaServer(log=tmp_path_factory.mktemp("llama") / "llama-server.log")
    try:
        server.start()
    except LlamaServerError as exc:
        pytest.fail(f"the real model server is needed and could not be started: {exc}", pytrace=False)
    yield server
    server.stop()
