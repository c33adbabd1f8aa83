"""The MCP test server (tests/mcp_server.py) through the official `mcp` client: what the tool registry's tests rely
on it to do, over Streamable HTTP and HTTP+SSE."""
import asyncio
from datetime import timedelta

import httpx
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.mcp_server import TOOL_NAMES


def over_streamable_http(url: str, work, headers: dict | None = None):
    async def connected():
        async with httpx.AsyncClient(headers=headers or {}) as http, \
                streamable_http_client(url, http_client=http) as (read, write, _):
            # (a bound for a server that never answers, not a speed check: a loaded machine took over 1 s)
            async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=30)) as session:
                await session.initialize()
                return await work(session)
    return asyncio.run(connected())


def test_its_tools_compute_fail_and_answer_big_over_streamable_http(mcp_server):
    async def work(session):
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        added = await session.call_tool("add", {"a": 2, "b": 40})
        failed = await session.call_tool("fail", {"message": "no such issue"})
        big = await session.call_tool("big", {"size": 100_000})
        return tools, added, failed, big

    tools, added, failed, big = over_streamable_http(mcp_server.url, work)

    assert set(tools) == set(TOOL_NAMES)
    assert tools["add"].inputSchema["required"] == ["a", "b"]
    assert added.isError is False and added.content[0].text == "42.0"
    assert failed.isError is True and "no such issue" in failed.content[0].text
    assert len(big.content[0].text) == 100_000


def test_sleep_outlasts_a_clients_read_timeout(mcp_server):
    from mcp import McpError

    async def work(session):
        with pytest.raises(McpError) as timed_out:
            await session.call_tool("sleep", {"seconds": 5}, read_timeout_seconds=timedelta(seconds=0.2))
        return timed_out.value

    error = over_streamable_http(mcp_server.url, work)

    assert "Timed out" in error.error.message


def test_echo_header_answers_the_callers_header_and_a_required_token_is_enforced(mcp_server):
    mcp_server.require_token("s3cret")

    echoed = over_streamable_http(
        mcp_server.url, lambda session: session.call_tool("echo_header", {"name": "x-user-token"}),
        headers={"Authorization": "Bearer s3cret", "X-User-Token": "alice-token"})
    unauthorized = httpx.post(mcp_server.url, json={}, headers={"Authorization": "Bearer wrong"})

    assert echoed.content[0].text == "alice-token"
    assert unauthorized.status_code == 401
    assert set(mcp_server.headers_seen("authorization")) == {"Bearer s3cret", "Bearer wrong"}


def test_the_older_http_sse_transport_lists_and_calls(mcp_server):
    async def connected():
        async with sse_client(mcp_server.sse_url) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return (await session.list_tools()).tools, await session.call_tool("add", {"a": 1, "b": 2})

    tools, added = asyncio.run(connected())

    assert {tool.name for tool in tools} == set(TOOL_NAMES) and added.content[0].text == "3.0"


def test_malformed_answers_a_body_that_is_not_json(mcp_server):
    response = httpx.post(mcp_server.malformed_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})

    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()
