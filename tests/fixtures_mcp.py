"""The `mcp_server` fixture: a real MCP server (tests/mcp_server.py: the official SDK's FastMCP over Streamable HTTP
and HTTP+SSE on 127.0.0.1), one per pytest worker for the whole session, reset (no token required, no requests
recorded) at the start and end of every test that uses it.

Registered for the whole suite with `pytest_plugins = [..., "tests.fixtures_mcp"]` in tests/conftest.py.
"""
import pytest

from tests.mcp_server import McpTestServer


@pytest.fixture(scope="session")
def _mcp_server_of_session():
    with McpTestServer() as server:
        yield server


@pytest.fixture
def mcp_server(_mcp_server_of_session):
    yield _mcp_server_of_session.reset()
    _mcp_server_of_session.reset()
