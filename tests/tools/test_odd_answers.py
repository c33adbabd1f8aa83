"""A server whose answers are valid MCP but odd for the database: a NUL in a tool's result, in its error and in its
description is stored as U+FFFD (PostgreSQL stores no NUL in text or jsonb), so registering it answers 201 and a
run calling it completes, on SQLite and PostgreSQL alike; a tool named `_under` is listed as `odd___under`, and an
allow-list may name it so; a server listing more tools than are kept says how many were left out; a tool listed
twice is kept once, one without a name left out, one whose input schema is too large too; an answer longer than
CHATTER_MCP_MAX_ANSWER_BYTES (a tool's, a listing's) is not read past it. Against real FastMCP servers
(tests/mcp_server.py build_odd_mcp, build_many_mcp, build_twice_listing_mcp, build_nameless_tool_mcp,
build_oversized_schema_mcp, and the endless answers of its /endless-* paths)."""
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import UsageRollup
from tests.invariants import assert_all
from tests.mcp_server import (ENDLESS_BYTES, LONG_TOOL, MANY_TOOLS, McpTestServer, build_many_mcp,
                              build_nameless_tool_mcp, build_oversized_schema_mcp, build_twice_listing_mcp)
from tests.fixtures_mcp import kept_mcp_sessions_closed
from tests.tools.conftest import client_with_key
from tests.tools.test_workflow_tools import chat, tool_messages
from tools.mcp_client import MAX_PAGES, MAX_SCHEMA_BYTES, MAX_TOOLS
from tools.models import McpServer
from tools.services import mcp_server_create, mcp_tool_run
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


def test_a_tool_whose_qualified_name_no_model_takes_is_left_out_and_said(alice, odd_mcp_server):
    """MCP allows tool names of 128 characters; a model's function name is at most 64 (letters, digits, _, -)."""
    client = client_with_key(alice)

    server = client.post("/api/v1/tools/servers/", {"name": "odd", "url": odd_mcp_server.url}, format="json").json()

    assert server["health"] == "healthy"
    assert LONG_TOOL not in {tool["name"] for tool in server["tools"]}
    assert {"nul", "nul_fail", "nul_described"} <= {tool["name"] for tool in server["tools"]}
    assert server["last_error"].startswith("left out 1 tool(s) whose name as odd__<tool> a model cannot be offered")
    assert LONG_TOOL[:40] in server["last_error"]
    assert f"odd__{LONG_TOOL}" not in {tool["name"] for tool in client.get("/api/v1/tools/").json()}


def test_a_server_listing_more_tools_than_are_kept_says_how_many_were_left_out(alice):
    with McpTestServer(build=build_many_mcp) as many:
        server = client_with_key(alice).post("/api/v1/tools/servers/", {"name": "many", "url": many.url},
                                             format="json").json()

    assert server["health"] == "healthy"
    assert [tool["name"] for tool in server["tools"]] == [f"t{number:03d}" for number in range(MAX_TOOLS)]
    assert server["last_error"] == (f"left out {MANY_TOOLS - MAX_TOOLS} tool(s) past the first {MAX_TOOLS} (a "
                                    f"server's list is cut at {MAX_TOOLS} tools, {MAX_PAGES} pages)")


def test_a_tool_listed_twice_is_kept_once_and_said(alice, openai_server):
    """Providers refuse two functions of one name (Anthropic: "Tool names must be unique"): the first is kept."""
    client = client_with_key(alice)
    with McpTestServer(build=build_twice_listing_mcp) as twice:
        server = client.post("/api/v1/tools/servers/", {"name": "twice", "url": twice.url}, format="json").json()
        openai_server.reply(tool_calls=[{"name": "twice__echo", "arguments": {"text": "hi"}}])
        openai_server.reply(content="Done.")

        execution = chat(alice, ["twice__*"])

        assert twice.calls == [("echo", {"text": "hi"})]
        kept_mcp_sessions_closed()  # while the server is there to see them closed
    assert server["health"] == "healthy"
    assert [(tool["name"], tool["description"]) for tool in server["tools"]] == [
        ("echo", "Echoes its text."), ("other", "Answers ok.")]
    assert server["last_error"] == ("left out 1 tool(s) listed again under a name listed before (the first of each "
                                    "name is kept): 'echo'")
    listed = [tool["name"] for tool in client.get("/api/v1/tools/").json() if tool["server"]]
    assert listed == ["twice__echo", "twice__other"]
    offered = [tool["function"]["name"] for tool in openai_server.requests[0].body["tools"]]
    assert sorted(offered) == ["twice__echo", "twice__other"]
    assert execution.status == "completed", execution.error_message


def test_a_tool_without_a_name_is_left_out_and_said(api):
    """`nameless__` names no tool: an allow-list may not name it, nor could a call find it."""
    with McpTestServer(build=build_nameless_tool_mcp) as nameless:
        server = api.post("/api/v1/tools/servers/", {"name": "nameless", "url": nameless.url}, format="json").json()

    assert server["health"] == "healthy"
    assert [tool["name"] for tool in server["tools"]] == ["echo"]
    assert server["last_error"].startswith("left out 1 tool(s) whose name as nameless__<tool> a model cannot be "
                                           "offered"), server["last_error"]
    assert [tool["name"] for tool in api.get("/api/v1/tools/").json() if tool["server"]] == ["nameless__echo"]


def test_a_tool_whose_input_schema_is_too_large_is_left_out_and_said(api):
    """A schema of 3,000 properties, or of 3 MB, was stored, listed and offered to every model allowed the tool."""
    with McpTestServer(build=build_oversized_schema_mcp) as oversized:
        server = api.post("/api/v1/tools/servers/", {"name": "big", "url": oversized.url}, format="json").json()

    assert server["health"] == "healthy"
    assert [tool["name"] for tool in server["tools"]] == ["echo"]
    assert server["last_error"] == (f"left out 2 tool(s) whose input schema is over {MAX_SCHEMA_BYTES} bytes (as "
                                    "compact JSON): 'wide', 'huge'")
    assert [tool["name"] for tool in api.get("/api/v1/tools/").json() if tool["server"]] == ["big__echo"]
    assert McpServer.objects.get(pk=server["id"]).tools == [
        {"name": "echo", "description": "Echoes its text.", "input_schema": server["tools"][0]["input_schema"]}]


def test_a_call_of_a_tool_with_an_overlong_name_gets_a_row_and_the_run_completes(alice, odd_mcp_server, openai_server):
    client = client_with_key(alice)
    assert client.post("/api/v1/tools/servers/", {"name": "odd", "url": odd_mcp_server.url},
                       format="json").status_code == 201
    asked = f"odd__{LONG_TOOL}"
    openai_server.reply(tool_calls=[{"name": asked, "arguments": {}}, {"name": "y" * 300, "arguments": {}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["odd__*"])

    assert execution.status == "completed", execution.error_message
    called, unknown = ToolCall.objects.filter(execution=execution).order_by("id")
    assert (called.tool, called.ok) == (asked[:100], False) and "offers no tool" in called.error
    assert (unknown.tool, unknown.ok) == ("y" * 100, False)
    assert odd_mcp_server.calls == []


def test_a_listed_tool_whose_name_starts_with_an_underscore_may_be_named_in_allowed_tools(api, odd_mcp_server):
    assert api.post("/api/v1/tools/servers/", {"name": "odd", "url": odd_mcp_server.url},
                    format="json").status_code == 201
    assert "odd___under" in {tool["name"] for tool in api.get("/api/v1/tools/").json()}

    response = api.post("/api/v1/chat/", {"message": "Go: odd___under {}", "allowed_tools": ["odd___under"]},
                        format="json")

    assert response.status_code == 201, response.content
    execution = api.get(f"/api/v1/executions/{response.json()['execution']['id']}/").json()
    [call] = execution["tool_call_log"]
    assert (call["tool"], call["ok"], call["result"]) == ("odd___under", True, "under ok")
    assert odd_mcp_server.calls == [("_under", {})]


ANSWER_LIMIT = 65536
PASSED = f"the server's answer passed {ANSWER_LIMIT} bytes (CHATTER_MCP_MAX_ANSWER_BYTES): the rest was not read"


@pytest.mark.parametrize("answered", ["endless_answer_url", "endless_json_answer_url"])
def test_a_tools_answer_past_the_answer_limit_fails_the_call_unread_and_is_not_charged(
        alice, staff, mcp_server, openai_server, settings, answered):
    """A hostile or broken server answering a call without end (an SSE event, a JSON body) would fill the process's
    memory before the result's cap applied: the call fails once the answer passes the limit, the rest unread."""
    settings.CHATTER_MCP_MAX_ANSWER_BYTES = ANSWER_LIMIT
    staff_api = APIClient()
    staff_api.force_login(staff)
    assert staff_api.post("/api/v1/pricing/", {
        "provider": "mcp", "model_pattern": "endless__.*", "per_call": "0.01",
        "effective_from": (timezone.now() - timedelta(hours=1)).isoformat()}, format="json").status_code == 201
    client = client_with_key(alice)
    server = client.post("/api/v1/tools/servers/", {"name": "endless", "url": getattr(mcp_server, answered)},
                         format="json").json()
    assert server["health"] == "healthy", server["last_error"]  # its listing is small: only a call's answer is odd
    openai_server.reply(tool_calls=[{"name": "endless__big", "arguments": {"size": 1}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["endless__*"])

    assert execution.status == "completed", execution.error_message
    [call] = ToolCall.objects.filter(execution=execution)
    said = f"the MCP server 'endless' could not be asked: {PASSED}"
    assert (call.ok, call.error, call.cost) == (False, said, Decimal("0"))  # a failed call is not charged
    assert [message["content"] for message in tool_messages(openai_server.requests[1])] == [f"Error: {said}"]
    assert not UsageRollup.objects.filter(owner=alice, provider="mcp").exists()
    assert_all(execution)
    health = client.get(f"/api/v1/tools/servers/{server['id']}/").json()
    assert (health["health"], health["last_error"]) == ("unhealthy", PASSED)
    assert mcp_server.calls == []  # the test server's own tool never ran: its path answered
    assert mcp_server.endless_sent < ENDLESS_BYTES  # the client stopped reading: the server could not send it all


def test_a_listing_past_the_answer_limit_registers_the_server_unhealthy_saying_why(alice, mcp_server, settings):
    settings.CHATTER_MCP_MAX_ANSWER_BYTES = ANSWER_LIMIT
    client = client_with_key(alice)

    response = client.post("/api/v1/tools/servers/", {"name": "endless", "url": mcp_server.endless_listing_url},
                           format="json")

    assert response.status_code == 201, response.content
    server = response.json()
    assert (server["health"], server["last_error"], server["tools"]) == ("unhealthy", PASSED, [])
    assert [tool["name"] for tool in client.get("/api/v1/tools/").json() if tool["server"]] == []
    assert mcp_server.endless_sent < ENDLESS_BYTES


def test_an_answer_sent_compressed_though_none_was_asked_for_is_refused_unread(alice, mcp_server, settings):
    """A compressed answer's size is not known until it is unpacked (16 MB of text gzip to a few KB): Chatter asks
    for answers as they are, and refuses one compressed anyway rather than unpack it."""
    mcp_server_create(owner=alice, name="packed", url=mcp_server.compressed_answer_url)

    packed = mcp_tool_run(user=alice, name="packed__add", arguments={"a": 1, "b": 2})

    said = ("the server's answer came compressed (gzip), which Chatter does not ask for: its size is not known until "
            "it is unpacked")
    assert packed.ok is False and packed.error == f"the MCP server 'packed' could not be asked: {said}", packed.error
    assert McpServer.objects.get(owner=alice, name="packed").last_error == said
    assert set(mcp_server.headers_seen("accept-encoding")) == {"identity"}


def test_the_sse_transports_stream_is_bounded_per_answer_not_over_its_session(alice, mcp_server, settings):
    """The HTTP+SSE transport brings every answer of a session on one stream: each answer is held to the limit,
    not their sum, so a kept session answers any number of calls under it."""
    settings.CHATTER_MCP_MAX_ANSWER_BYTES = ANSWER_LIMIT
    legacy = mcp_server_create(owner=alice, name="legacy", url=mcp_server.sse_url, transport="sse")
    size = ANSWER_LIMIT // 4  # FastMCP sends a text result twice (its content, its structured content)

    answered = [mcp_tool_run(user=alice, name="legacy__big", arguments={"size": size}) for _ in range(4)]
    past = mcp_tool_run(user=alice, name="legacy__big", arguments={"size": ANSWER_LIMIT})

    assert [(result.ok, len(result.text)) for result in answered] == [(True, size)] * 4
    assert past.ok is False and past.error == f"the MCP server 'legacy' could not be asked: {PASSED}", past.error
    legacy.refresh_from_db()
    assert (legacy.health, legacy.last_error) == ("unhealthy", PASSED)
