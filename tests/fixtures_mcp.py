"""The `mcp_server` fixture: a real MCP server (tests/mcp_server.py: the official SDK's FastMCP over Streamable HTTP
and HTTP+SSE on 127.0.0.1), one per pytest worker for the whole session, reset (no token required, no requests
recorded) at the start and end of every test that uses it, Chatter's kept sessions with it closed as the test ends.

Registered for the whole suite with `pytest_plugins = [..., "tests.fixtures_mcp"]` in tests/conftest.py.
"""
import pytest

from tests.mcp_server import McpTestServer, build_odd_mcp


@pytest.fixture(scope="session")
def _mcp_server_of_session():
    with McpTestServer() as server:
        yield server


@pytest.fixture
def mcp_server(_mcp_server_of_session):
    yield _mcp_server_of_session.reset()
    kept_mcp_sessions_closed()
    _mcp_server_of_session.reset()


@pytest.fixture(scope="session")
def _odd_mcp_server_of_session():
    with McpTestServer(build=build_odd_mcp) as server:
        yield server


@pytest.fixture
def odd_mcp_server(_odd_mcp_server_of_session):
    """A second real MCP server whose answers are valid MCP but odd (tests/mcp_server.py build_odd_mcp)."""
    yield _odd_mcp_server_of_session.reset()
    kept_mcp_sessions_closed()
    _odd_mcp_server_of_session.reset()


def kept_mcp_sessions_closed() -> None:
    """Chatter's kept MCP sessions (tools.mcp_pool) of a test closed as it ends, while the test's settings still
    allow the server's address: each test starts with none."""
    from tools.mcp_pool import mcp_pool_close_all

    mcp_pool_close_all()
