"""A server whose answers are valid MCP but odd for the database: a NUL in a tool's result, in its error and in its
description is stored as U+FFFD (PostgreSQL stores no NUL in text or jsonb), so registering it answers 201 and a
run calling it completes, on SQLite and PostgreSQL alike. Against a real FastMCP server (tests/mcp_server.py
build_odd_mcp)."""
import pytest

from tests.tools.conftest import client_with_key
from tests.tools.test_workflow_tools import chat, tool_messages
from tools.models import McpServer
from workflows.models import ToolCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]


def test_a_nul_in_a_tools_description_registers_the_server_healthy(alice, odd_mcp_server):
    client = client_with_key(alice)

    response = client.post("/api/v1/tools/servers/", {"name": "odd", "url": odd_mcp_server.url}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["health"] == "healthy"
    described = {tool["name"]: tool["description"] for tool in response.json()["tools"]}
    assert described["nul_described"] == "bad\ufffddescription"
    listed = {tool["name"]: tool["description"] for tool in client.get("/api/v1/tools/").json()}
    assert listed["odd__nul_described"] == "bad\ufffddescription"
    assert McpServer.objects.filter(owner=alice, name="odd").count() == 1


def test_a_nul_in_a_tools_result_or_error_is_stored_and_the_run_completes(alice, odd_mcp_server, openai_server):
    client = client_with_key(alice)
    assert client.post("/api/v1/tools/servers/", {"name": "odd", "url": odd_mcp_server.url},
                       format="json").status_code == 201
    openai_server.reply(tool_calls=[{"name": "odd__nul", "arguments": {}}, {"name": "odd__nul_fail", "arguments": {}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["odd__*"])

    assert execution.status == "completed", execution.error_message
    answered, failed = ToolCall.objects.filter(execution=execution).order_by("id")
    assert (answered.ok, answered.result) == (True, "a\ufffdb")
    assert failed.ok is False and "bad\ufffderror" in failed.error
    assert [message["content"] for message in tool_messages(openai_server.requests[1])][0] == "a\ufffdb"
