"""MCP tools as LangChain tools, for Python graphs of your own (CHATTER_GRAPHS; docs/tools.md#tools-in-workflows):
`await user_tools(user, allowed=[...])` gives the tools of `allowed` (`<server>__<tool>`, `<server>__*`) that `user`
may call, as langchain-mcp-adapters makes them, named `<server>__<tool>`. Each call goes over a kept session
(tools.mcp_pool) through core.outbound's checked transport, within CHATTER_MCP_TIMEOUT_S, its text cut at
CHATTER_MCP_MAX_RESULT_BYTES; a failure is an error result the model sees, never an exception that ends the graph.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection

from engine.tools import MCP_SERVER_METADATA, tool_allowed
from tools.mcp_client import McpUnreachable, checked_http_client, mcp_tool_call
from tools.mcp_pool import mcp_pool
from tools.models import QUALIFIER
from tools.selectors import CredentialMissing, mcp_call_headers, mcp_endpoint, tool_list

if TYPE_CHECKING:
    from mcp import types


# Asked before each call with the tool's qualified name and its tool call id: None to make it, else why not.
BeforeCall = Callable[[str, "str | None"], Awaitable["str | None"]]


async def user_tools(user, *, allowed: Sequence[str], before_call: BeforeCall | None = None) -> list:
    """The MCP tools among `allowed` that `user` may call, as LangChain tools (langchain-mcp-adapters).
    `before_call` (a run's budgets: workflows.graph_tools) may refuse a call, which is then not made: the model
    gets the refusal as the tool's error."""
    servers = await asyncio.to_thread(_allowed_servers, user, tuple(allowed))
    return [_tool(server, tool, before_call) for server in servers for tool in server["tools"]]


def _allowed_servers(user, allowed: tuple[str, ...]) -> list[dict]:
    """Read on a thread of its own (a graph's factory runs on an event loop): its database connection is closed
    when it is done."""
    from tools.models import McpServer

    try:
        chosen: dict[str, dict] = {}
        for tool in tool_list(user=user):
            if tool["server"] is None or not tool["enabled"] or not tool_allowed(tool["name"], allowed):
                continue
            server_id = tool["server"]["id"]
            if server_id not in chosen:
                server = McpServer.objects.get(pk=server_id)
                try:  # the user's own values of its per_user_headers, or the refusal each call answers
                    headers, refusal = mcp_call_headers(server=server, user=user), ""
                except CredentialMissing as missing:
                    headers, refusal = {}, str(missing)
                chosen[server_id] = {"id": server_id, "name": server.name, "url": server.url, "user": user,
                                     "transport": server.transport, "headers": headers, "refusal": refusal,
                                     "endpoint": mcp_endpoint(server=server, headers=headers), "tools": [],
                                     "record": server}
            chosen[server_id]["tools"].append(tool)
        return list(chosen.values())
    finally:
        connection.close()


def _tool(server: dict, tool: dict, before_call: BeforeCall | None):
    from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
    from mcp import types

    timeout_s = settings.CHATTER_MCP_TIMEOUT_S
    own_name = tool["name"].split(QUALIFIER, 1)[1]
    if server["transport"] == "sse":
        connection_ = {"transport": "sse", "url": server["url"], "headers": server["headers"], "timeout": timeout_s,
                       "sse_read_timeout": timeout_s, "httpx_client_factory": checked_http_client}
    else:
        connection_ = {"transport": "streamable_http", "url": server["url"], "headers": server["headers"],
                       "timeout": timedelta(seconds=timeout_s), "sse_read_timeout": timedelta(seconds=timeout_s),
                       "httpx_client_factory": checked_http_client}
    converted = convert_mcp_tool_to_langchain_tool(
        None, types.Tool(name=own_name, description=tool["description"], inputSchema=tool["input_schema"]),
        connection=connection_, server_name=server["name"],
        tool_interceptors=[_Bounded(server, timeout_s, tool["name"], before_call)])
    converted.name = tool["name"]
    converted.metadata = {**(converted.metadata or {}), MCP_SERVER_METADATA: server["id"]}
    return converted


class _Bounded:
    """The adapters' interceptor around each call: the call is made on a kept session of the server
    (tools.mcp_pool, as a JSON workflow's are) within the timeout, its text capped, and any failure an error
    result (the adapters give the model an error ToolMessage), its message without the server's header values."""

    def __init__(self, server: dict, timeout_s: float, qualified: str, before_call: BeforeCall | None) -> None:
        self.server, self.timeout_s, self.qualified, self.before_call = server, timeout_s, qualified, before_call

    async def __call__(self, request, handler):
        if self.server["refusal"]:  # the user has not set their own credentials for it: nothing is sent
            return _error(self.server["refusal"])
        if self.before_call is not None:  # LangGraph's ToolNode hands the tool its runtime, with the call's id
            refused = await self.before_call(self.qualified, getattr(request.runtime, "tool_call_id", None))
            if refused is not None:
                return _error(refused)
        started = time.monotonic()
        try:
            result = await mcp_pool().call_async(
                mcp_tool_call, self.server["endpoint"], tool=request.name, arguments=request.args,
                timeout_s=self.timeout_s, max_result_bytes=settings.CHATTER_MCP_MAX_RESULT_BYTES)
        except McpUnreachable as exc:  # marked unhealthy as the JSON-workflow path marks it (tools.services)
            return _error(await asyncio.to_thread(_unreachable, self.server["record"], exc))
        if self.server["record"].health != "healthy":
            await asyncio.to_thread(_health_note, self.server["record"], "")
        if not result.ok:
            result = await asyncio.to_thread(_gone_check, self.server, request.name, result,
                                             self.timeout_s - (time.monotonic() - started))
            return _error(result.error)
        from mcp import types

        return types.CallToolResult(content=[types.TextContent(type="text", text=result.text)])


def _health_note(server, error: str) -> None:
    """On a thread of its own (the graph's loop must not wait on the database): its connection closed after."""
    from tools.services import mcp_server_health_note

    try:
        mcp_server_health_note(server, error=error)
    finally:
        connection.close()


def _unreachable(server, failure: McpUnreachable) -> str:
    """tools.services.mcp_server_unreachable on a thread of its own (as _health_note)."""
    from tools.services import mcp_server_unreachable

    try:
        return mcp_server_unreachable(server, failure=failure)
    finally:
        connection.close()


def _gone_check(server: dict, tool: str, result, time_left_s: float):
    """On a thread of its own, as _health_note: a call that found its tool gone refreshes the server's tools (within
    what is left of the call's time)."""
    from tools.services import mcp_tool_gone_check

    try:
        return mcp_tool_gone_check(server=server["record"], user=server["user"], tool=tool, result=result,
                                   time_left_s=time_left_s)
    finally:
        connection.close()


def _error(message: str) -> types.CallToolResult:
    from mcp import types

    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], isError=True)
