"""/langgraph/mcp, MCP's Streamable HTTP transport, through the official MCP client (the `mcp` package's
transport and ClientSession) against a real daphne server: the caller's assistants are tools, a call is one run
accounted like any other, and the key, its scopes and ownership hold as on every /langgraph/ route. The
transport's edges (what the specification says a server answers) over Django's test client."""
import asyncio
import json
from decimal import Decimal

import httpx
import pytest
from django.test import Client as DjangoClient
from langchain_mcp_adapters.client import MultiServerMCPClient
from langgraph_sdk import get_sync_client
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamable_http_client

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from tests.agent_server.conftest import reconcile_exit_code
from tests.agent_server.test_python_graphs import EXPECTED, figures, script_turn
from tests.factories import ApiTokenFactory
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
QUESTION = "What is 12*7?"


def http_client(key: str | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"x-api-key": key} if key else {}, timeout=httpx.Timeout(30, read=120))


def with_session(server, key: str, work):
    """Connect as an MCP client does (initialize, then notifications/initialized), then `await work(session)`;
    returns (the initialize result, what work returned)."""
    async def connected():
        async with http_client(key) as http, streamable_http_client(f"{server.langgraph_url}/mcp",
                                                                    http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                initialized = await session.initialize()
                return initialized, await work(session)

    return asyncio.run(connected())


async def all_tools(session) -> dict:
    return {tool.name: tool for tool in (await session.list_tools()).tools}


def run_of(result) -> WorkflowExecution:
    return WorkflowExecution.objects.get(pk=result.meta["chatter/run"]["run_id"])


def test_the_mcp_client_lists_assistants_as_tools_and_a_call_is_an_accounted_run(graph_server, alice, alice_key):
    async def work(session):
        return await all_tools(session), await session.call_tool("universal_chat", {"message": QUESTION})

    initialized, (tools, result) = with_session(graph_server, alice_key, work)

    assert initialized.serverInfo.name == "chatter" and initialized.protocolVersion == "2025-11-25"
    assert initialized.capabilities.tools is not None
    assert {"universal_chat", "calculator_agent", "house_agent"} <= tools.keys()
    chat = tools["universal_chat"]
    assert chat.title == "Universal chat" and set(chat.inputSchema["properties"]) == {"message", "messages"}
    graph = tools["calculator_agent"]  # the graph's own input schema (a MessagesState)
    assert graph.inputSchema["required"] == ["messages"] and "$defs" in graph.inputSchema
    assert graph.meta == {"chatter/assistant_id": "calculator_agent", "chatter/graph_id": "calculator_agent"}
    # A graph whose schema cannot be made (a TypedDict state pydantic cannot read on Python 3.11, a factory that
    # needs a runtime) is still a tool, taking any object.
    assert tools["stateful"].inputSchema == {"type": "object"} and "runtime_factory" in tools

    assert result.isError is False
    assert "84" in result.content[0].text
    assert [m["type"] for m in result.structuredContent["messages"]] == ["human", "ai"]
    assert result.structuredContent["messages"][-1]["content"] == result.content[0].text
    execution = run_of(result)
    assert execution.owner == alice and execution.template.key == "universal_chat" and execution.status == "completed"
    assert execution.conversation_id is None and execution.mode == "sync"
    assert execution.total_tokens > 0 and execution.cost > Decimal("0")
    assert (execution.llm_calls, execution.tool_calls) == (2, 1)
    assert execution.api_key.user == alice  # the key that made the call, as on every surface
    assert result.meta["chatter/run"]["total_tokens"] == execution.total_tokens
    assert result.meta["chatter/run"]["cost"] == str(execution.cost)
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    audited = set(AuditEvent.objects.filter(target_id=str(execution.pk)).values_list("action", flat=True))
    assert {"execution.started", "execution.completed"} <= audited
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_a_registered_graph_is_called_with_its_own_input_and_accounted(graph_server, openai_stub, alice_key):
    script_turn(openai_stub)

    _, result = with_session(graph_server, alice_key, lambda session: session.call_tool(
        "calculator_agent", {"messages": [{"role": "user", "content": QUESTION}]}))

    assert result.isError is False and result.content[0].text == "12*7 = 84"
    assert [m["type"] for m in result.structuredContent["messages"]] == ["human", "ai", "tool", "ai"]
    execution = run_of(result)
    assert execution.status == "completed" and figures(execution) == EXPECTED
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_a_run_that_fails_is_an_error_result_and_its_usage_is_kept(server, alice_key):
    sdk = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tight = sdk.assistants.create(graph_id="universal_chat", name="Tight", context={"max_total_tokens": 1})
    runs_before = WorkflowExecution.objects.count()

    async def work(session):
        failed = await session.call_tool(tight["assistant_id"], {"message": QUESTION})
        refused = await session.call_tool("universal_chat", {})  # no message: nothing to run
        with pytest.raises(McpError) as unknown:
            await session.call_tool("no_such_assistant", {"message": "hi"})
        return failed, refused, unknown.value

    _, (failed, refused, unknown) = with_session(server, alice_key, work)

    assert failed.isError is True and "limit_exceeded" in failed.content[0].text
    execution = run_of(failed)
    assert execution.status == "failed" and execution.error_type == "limit_exceeded"
    assert execution.total_tokens > 0  # what the model reported before the limit stopped the run (I5)
    assert_all(execution)
    assert refused.isError is True and "message" in refused.content[0].text and refused.meta is None
    assert unknown.error.code == -32602 and "no_such_assistant" in unknown.error.message
    assert WorkflowExecution.objects.count() == runs_before + 1  # only the run that failed
    assert reconcile_exit_code() == 0


def test_bob_neither_sees_nor_calls_alices_assistants(server, alice_key, bob, bob_key):
    sdk = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    mine = sdk.assistants.create(graph_id="universal_chat", name="Alice's helper")["assistant_id"]

    _, alices = with_session(server, alice_key, all_tools)

    async def bobs_work(session):
        tools = await all_tools(session)
        with pytest.raises(McpError) as refused:
            await session.call_tool(mine, {"message": "hi"})
        return tools, refused.value

    _, (bobs, refused) = with_session(server, bob_key, bobs_work)

    assert mine in alices and alices[mine].title == "Alice's helper"
    assert mine not in bobs and "universal_chat" in bobs
    assert refused.error.code == -32602
    assert not WorkflowExecution.objects.filter(owner=bob).exists()


def test_a_key_without_the_runs_scope_lists_tools_but_cannot_call_one(server, alice):
    reader = ApiTokenFactory(user=alice, name="reader", scopes=["read"]).key

    _, tools = with_session(server, reader, all_tools)
    # mcp 1.x's transport raises an HTTP error status (here the 403) out of the connection, not as an McpError.
    with pytest.raises(ExceptionGroup) as failed:
        with_session(server, reader, lambda session: session.call_tool("universal_chat", {"message": QUESTION}))
    refused = mcp_post(reader, call_message("universal_chat"))

    assert "universal_chat" in tools
    forbidden = failed.value.subgroup(httpx.HTTPStatusError).exceptions[0]
    assert forbidden.response.status_code == 403
    assert refused.status_code == 403 and "(runs)" in refused.json()["detail"]
    assert not WorkflowExecution.objects.exists()


def test_langchains_mcp_adapters_load_the_assistants_as_tools_and_a_call_is_a_run(server, alice, alice_key):
    """langchain-mcp-adapters (what a Python graph uses for MCP tools) over the same endpoint: the assistants
    become LangChain tools, and invoking one is a run of the caller's."""
    async def loaded():
        client = MultiServerMCPClient({"chatter": {
            "transport": "streamable_http", "url": f"{server.langgraph_url}/mcp", "headers": {"x-api-key": alice_key}}})
        tools = {tool.name: tool for tool in await client.get_tools()}
        return tools, await tools["universal_chat"].ainvoke({"message": QUESTION})

    tools, answer = asyncio.run(loaded())

    assert "universal_chat" in tools and set(tools["universal_chat"].args_schema["properties"]) == {"message", "messages"}
    assert "84" in str(answer)
    execution = WorkflowExecution.objects.get()
    assert execution.owner == alice and execution.status == "completed" and execution.template.key == "universal_chat"


# --- the transport's edges (Django's test client) ------------------------------------------------------------

def call_message(name: str, message_id=1) -> dict:
    return {"jsonrpc": "2.0", "id": message_id, "method": "tools/call",
            "params": {"name": name, "arguments": {"message": QUESTION}}}


def mcp_post(key: str | None, body, *, headers: dict | None = None, raw: bytes | None = None):
    sent = {**({"x-api-key": key} if key else {}), "accept": "application/json, text/event-stream",
            **(headers or {})}
    return DjangoClient().post("/langgraph/mcp", data=raw if raw is not None else json.dumps(body),
                               content_type="application/json", headers=sent)


def initialize(version: str) -> dict:
    return {"jsonrpc": "2.0", "id": "init", "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def test_without_a_key_it_is_a_401_in_the_apis_shape_and_nothing_runs(alice):
    response = mcp_post(None, call_message("universal_chat"))

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json" and "API key" in response.json()["detail"]
    assert not WorkflowExecution.objects.exists()


def test_it_agrees_on_a_protocol_revision_it_speaks_and_offers_its_newest_otherwise(alice_key):
    older = mcp_post(alice_key, initialize("2025-03-26"))
    unknown = mcp_post(alice_key, initialize("1999-01-01"))

    assert older.status_code == 200 and older.json()["id"] == "init"
    assert older.json()["result"]["protocolVersion"] == "2025-03-26"
    assert older.json()["result"]["serverInfo"]["name"] == "chatter"
    assert older.json()["result"]["capabilities"] == {"tools": {}}
    assert unknown.json()["result"]["protocolVersion"] == "2025-11-25"
    assert "Mcp-Session-Id" not in older  # stateless: no session


def test_a_notification_is_accepted_with_202_and_no_body(alice_key):
    response = mcp_post(alice_key, {"jsonrpc": "2.0", "method": "notifications/initialized"})

    assert response.status_code == 202 and response.content == b""


def test_it_answers_protocol_errors_in_json_rpcs_shape(alice_key):
    bad_json = mcp_post(alice_key, None, raw=b'{"jsonrpc": "2.0", "id": 1, "method": ')
    batch = mcp_post(alice_key, [call_message("universal_chat")])
    unknown_method = mcp_post(alice_key, {"jsonrpc": "2.0", "id": 7, "method": "resources/list"})
    not_json_rpc = mcp_post(alice_key, {"id": 8, "method": "ping"})
    bad_params = mcp_post(alice_key, {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": 3}})
    bad_version = mcp_post(alice_key, {"jsonrpc": "2.0", "id": 10, "method": "ping"},
                           headers={"MCP-Protocol-Version": "2031-01-01"})
    ping = mcp_post(alice_key, {"jsonrpc": "2.0", "id": 11, "method": "ping"},
                    headers={"MCP-Protocol-Version": "2025-06-18"})

    assert bad_json.status_code == 400
    assert bad_json.json()["jsonrpc"] == "2.0" and bad_json.json()["id"] is None
    assert bad_json.json()["error"]["code"] == -32700
    assert batch.status_code == 400 and batch.json()["error"]["code"] == -32600
    assert unknown_method.status_code == 200
    assert unknown_method.json() == {"jsonrpc": "2.0", "id": 7, "error": {
        "code": -32601, "message": "Method not found: resources/list"}}
    assert not_json_rpc.status_code == 400 and not_json_rpc.json()["error"]["code"] == -32600
    assert not_json_rpc.json()["id"] == 8
    assert bad_params.json()["error"]["code"] == -32602 and bad_params.json()["id"] == 9
    assert bad_version.status_code == 400 and bad_version.json()["error"]["code"] == -32600
    assert ping.json() == {"jsonrpc": "2.0", "id": 11, "result": {}}
    assert not WorkflowExecution.objects.exists()


def test_it_offers_no_server_stream_and_no_session_to_end(alice_key):
    for method in ("GET", "DELETE"):
        response = DjangoClient().generic(method, "/langgraph/mcp", headers={
            "x-api-key": alice_key, "accept": "text/event-stream"})

        assert response.status_code == 405 and response["Allow"] == "POST"


def test_only_a_tool_call_takes_from_the_run_throttle(alice_key, run_rate):
    from django.core.cache import cache

    cache.clear()
    run_rate("1/min")
    handshake = [mcp_post(alice_key, initialize("2025-11-25")),
                 mcp_post(alice_key, {"jsonrpc": "2.0", "method": "notifications/initialized"}),
                 mcp_post(alice_key, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})]

    first = mcp_post(alice_key, call_message("universal_chat"))
    second = mcp_post(alice_key, call_message("universal_chat", 2))

    assert [r.status_code for r in handshake] == [200, 202, 200]
    assert first.status_code == 200 and first.json()["result"]["isError"] is False
    assert second.status_code == 429 and int(second["Retry-After"]) > 0
    assert WorkflowExecution.objects.count() == 1
