"""Calling an MCP tool for a user (tools.services.mcp_tool_run) against the real MCP server: the result as text,
the server's headers sent, and every fault (a tool error, a timeout, an oversized result, a server that is down)
a result that says why rather than an exception; only tools the user sees are called (issue 44)."""
import pytest

from tests.fixtures_mcp import kept_mcp_sessions_closed
from tests.mcp_server import McpTestServer, build_held_listing_mcp
from tests.tools.conftest import client_with_key
from tools.models import McpServer
from tools.selectors import ToolUnavailable
from tools.services import mcp_server_create, mcp_server_update, mcp_tool_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]


@pytest.fixture
def tracker(alice, mcp_server):
    return mcp_server_create(owner=alice, name="tracker", url=mcp_server.url,
                             headers={"X-User-Token": "alice-token"})


def test_a_tool_computes_and_gets_the_servers_headers(alice, tracker, mcp_server):
    added = mcp_tool_run(user=alice, name="tracker__add", arguments={"a": 2, "b": 40})
    echoed = mcp_tool_run(user=alice, name="tracker__echo_header", arguments={"name": "x-user-token"})

    assert (added.ok, added.text, added.error, added.truncated) == (True, "42.0", "", False)
    assert mcp_server.calls == [("add", {"a": 2, "b": 40}), ("echo_header", {"name": "x-user-token"})]
    # the credential reached the server, and its echo is not handed back to the model, the run or the API
    assert mcp_server.headers_seen("x-user-token")[-1] == "alice-token"
    assert echoed.ok and echoed.text == "[redacted]"


def test_a_tool_error_is_a_result_that_says_so(alice, tracker):
    failed = mcp_tool_run(user=alice, name="tracker__fail", arguments={"message": "no such issue"})

    assert failed.ok is False and "no such issue" in failed.error
    tracker.refresh_from_db()
    assert tracker.health == "healthy"  # the server answered: the tool failed, not the server


def test_a_slow_tool_times_out_as_a_result_and_the_server_stays_healthy(alice, tracker, settings):
    settings.CHATTER_MCP_TIMEOUT_S = 1

    slow = mcp_tool_run(user=alice, name="tracker__sleep", arguments={"seconds": 5})

    assert slow.ok is False and "1 s" in slow.error
    tracker.refresh_from_db()
    assert tracker.health == "healthy"


def test_an_oversized_result_is_cut_with_a_note(alice, tracker, settings):
    settings.CHATTER_MCP_MAX_RESULT_BYTES = 1000

    big = mcp_tool_run(user=alice, name="tracker__big", arguments={"size": 5000})

    assert big.ok and big.truncated
    assert big.text.startswith("x" * 1000) and "x" * 1001 not in big.text
    assert big.text.endswith("[truncated: the result was 5000 bytes, only the first 1000 are kept]")


def test_a_server_that_went_down_is_a_result_and_is_marked_unhealthy(alice, tracker, mcp_server):
    McpServer.objects.filter(pk=tracker.pk).update(url=mcp_server.url.replace(str(mcp_server.port), "1"))

    down = mcp_tool_run(user=alice, name="tracker__add", arguments={"a": 1, "b": 2})

    assert down.ok is False and "could not be asked" in down.error
    tracker.refresh_from_db()
    assert tracker.health == "unhealthy" and "could not reach the server" in tracker.last_error


def test_an_answer_stream_that_ends_empty_fails_the_call_at_once_and_marks_the_server(alice, mcp_server, settings):
    """A proxy may end a tools/call's event stream before the answer: nothing can bring it any more."""
    import time

    settings.CHATTER_MCP_TIMEOUT_S = 30
    mcp_server_create(owner=alice, name="proxied", url=mcp_server.empty_answer_url)
    asked = time.monotonic()

    lost = mcp_tool_run(user=alice, name="proxied__add", arguments={"a": 1, "b": 2})

    assert time.monotonic() - asked < 15  # a generous bound: it failed as its stream ended, not at its timeout
    said = "could not reach the server (its answer's stream ended before the answer)"
    assert lost.ok is False and lost.error == f"the MCP server 'proxied' could not be asked: {said}", lost.error
    proxied = McpServer.objects.get(owner=alice, name="proxied")
    assert proxied.health == "unhealthy" and proxied.last_error == said
    assert mcp_server.calls == []  # the server never saw the call


def test_only_tools_the_user_sees_of_enabled_servers_are_called(alice, bob, tracker, mcp_server):
    for user, name, reason in [(bob, "tracker__add", "no MCP server 'tracker'"),
                               (alice, "tracker__nope", "offers no tool 'nope'"),
                               (alice, "calculator", "not an MCP tool"),
                               (alice, "other__add", "no MCP server 'other'")]:
        with pytest.raises(ToolUnavailable, match=reason):
            mcp_tool_run(user=user, name=name, arguments={})
    mcp_server_update(server=tracker, actor=alice, changes={"enabled": False})
    with pytest.raises(ToolUnavailable, match="switched off"):
        mcp_tool_run(user=alice, name="tracker__add", arguments={"a": 1, "b": 2})
    assert mcp_server.calls == []  # none reached the server


def test_a_shared_server_is_called_with_its_own_headers_for_everyone(bob, staff, mcp_server):
    mcp_server_create(owner=staff, name="docs", url=mcp_server.url, headers={"X-User-Token": "team-token"},
                      shared=True)

    echoed = mcp_tool_run(user=bob, name="docs__echo_header", arguments={"name": "x-user-token"})

    assert mcp_server.headers_seen("x-user-token")[-1] == "team-token"
    assert echoed.ok and echoed.text == "[redacted]"
    assert client_with_key(bob).get("/api/v1/tools/servers/").json()["results"][0]["header_names"] == ["X-User-Token"]


def test_b11_a_users_own_server_is_called_before_a_shared_one_of_the_same_name(alice, bob, staff, mcp_server):
    mcp_server_create(owner=staff, name="docs", url=mcp_server.url, headers={"X-Which": "shared"}, shared=True)
    mcp_server_create(owner=alice, name="docs", url=mcp_server.url, headers={"X-Which": "alices"})

    for user, which in [(alice, "alices"), (bob, "shared"), (alice, "alices")]:
        assert mcp_tool_run(user=user, name="docs__echo_header", arguments={"name": "x-which"}).ok
        assert mcp_server.headers_seen("x-which")[-1] == which


VANISHED = {"name": "vanished", "description": "A tool the server listed once.", "input_schema": {"type": "object"}}


def test_scope_a_call_that_finds_its_tool_gone_refreshes_the_servers_tools(alice, tracker, mcp_server):
    from tests.mcp_server import TOOL_NAMES

    McpServer.objects.filter(pk=tracker.pk).update(tools=[*tracker.tools, VANISHED])
    listed_at = McpServer.objects.get(pk=tracker.pk).tools_refreshed_at

    failed = mcp_tool_run(user=alice, name="tracker__fail", arguments={"message": "no such issue"})
    assert McpServer.objects.get(pk=tracker.pk).tools_refreshed_at == listed_at  # a tool's own error: no re-listing
    gone = mcp_tool_run(user=alice, name="tracker__vanished", arguments={})

    assert failed.ok is False and "no longer offers" not in failed.error
    assert gone.ok is False
    assert gone.error.startswith("the MCP server 'tracker' no longer offers the tool 'vanished'"), gone.error
    assert "Unknown tool: vanished" in gone.error  # what the server said
    tracker.refresh_from_db()
    assert sorted(tool["name"] for tool in tracker.tools) == sorted(TOOL_NAMES)
    assert tracker.tools_refreshed_at > listed_at
    with pytest.raises(ToolUnavailable):  # no longer offered to anyone
        mcp_tool_run(user=alice, name="tracker__vanished", arguments={})


def test_a_gone_tools_listing_waits_only_for_what_is_left_of_the_calls_time(alice, settings):
    """A run's call is held to its node's tool_timeout_ms and the run's time left (`timeout_s`), its re-listing too."""
    settings.CHATTER_MCP_TIMEOUT_S = 5
    with McpTestServer(build=build_held_listing_mcp) as held:
        server = mcp_server_create(owner=alice, name="held", url=held.url)  # its first listing is answered
        listed = server.tools
        try:
            gone = mcp_tool_run(user=alice, name="held__vanished", arguments={}, timeout_s=1)
        finally:
            held.release()
            kept_mcp_sessions_closed()

    assert [tool["name"] for tool in listed] == ["vanished"]
    assert gone.ok is False and gone.error == "Unknown tool: vanished"  # the server's word: no listing in time
    server.refresh_from_db()
    # A listing the call's own time cut short says nothing of the server: it stays as it was.
    assert (server.health, server.last_error, server.tools) == ("healthy", "", listed)


def test_scope_a_tool_is_called_over_the_older_http_sse_transport_too(alice, mcp_server):
    mcp_server_create(owner=alice, name="legacy", url=mcp_server.sse_url, transport="sse",
                      headers={"X-User-Token": "alice-token"})

    added = mcp_tool_run(user=alice, name="legacy__add", arguments={"a": 2, "b": 40})
    failed = mcp_tool_run(user=alice, name="legacy__fail", arguments={"message": "no such issue"})

    assert (added.ok, added.text) == (True, "42.0")
    assert failed.ok is False and "no such issue" in failed.error
    assert mcp_server.calls == [("add", {"a": 2, "b": 40}), ("fail", {"message": "no such issue"})]
    assert {request["path"] for request in mcp_server.requests} <= {"/sse", "/messages/"}
    assert set(mcp_server.headers_seen("x-user-token")) == {"alice-token"}
