"""MCP sessions kept and reused (issue 44, B11; tools.mcp_pool) against the real MCP server: a run's calls and the
next run's share one session of the server (one initialize, one Mcp-Session-Id); a changed or deleted server's
session is closed (the server sees its DELETE), as is an idle one after CHATTER_MCP_IDLE_S and one whose transport
failed; a session the server dropped is replaced and the call made once; calls share a connection."""
import threading
import time

import anyio
import httpx
import pytest

from tools.mcp_client import checked_http_client
from tools.services import mcp_server_create, mcp_server_delete, mcp_server_update, mcp_tool_run
from workflows.models import ToolCall
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

SESSION = "mcp-session-id"


@pytest.fixture
def tracker(alice, mcp_server):
    server = mcp_server_create(owner=alice, name="tracker", url=mcp_server.url, headers={"X-Token": "one"})
    mcp_server.reset()  # what discovery asked (on a session of its own) is not a call's
    return server


def sessions_used(mcp_server) -> list[str]:
    """The session ids of the tool-call exchanges (POSTs carrying one), in order, each once."""
    seen = [r["headers"][SESSION] for r in mcp_server.requests if r["method"] == "POST" and SESSION in r["headers"]]
    return list(dict.fromkeys(seen))


def closed_sessions(mcp_server) -> set[str]:
    return {r["headers"].get(SESSION) for r in mcp_server.requests if r["method"] == "DELETE"}


def wait_for(condition, deadline_s=10.0):
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def add(user, a=1, b=2):
    return mcp_tool_run(user=user, name="tracker__add", arguments={"a": a, "b": b})


def test_b11_a_runs_calls_and_the_next_runs_share_one_kept_session(alice, tracker, mcp_server, openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}},
                                    {"name": "tracker__add", "arguments": {"a": 3, "b": 4}}])
    openai_server.reply(content="3 and 7.")
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 5, "b": 6}}])
    openai_server.reply(content="11.")

    for _ in range(2):
        execution = execution_create(ChatRequest(owner=alice, message="add", config={
            "provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["tracker__add"]}))
        assert execution_run(execution_id=execution.pk).status == "completed"

    assert [args for _, args in mcp_server.calls] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 5, "b": 6}]
    assert ToolCall.objects.filter(tool="tracker__add", ok=True).count() == 3
    assert len(sessions_used(mcp_server)) == 1
    initializes = [r for r in mcp_server.requests if r["method"] == "POST" and SESSION not in r["headers"]]
    assert len(initializes) == 1  # three calls, two runs: the session was opened once


def test_b11_a_changed_or_deleted_servers_session_is_closed(alice, tracker, mcp_server):
    assert add(alice).ok
    [first] = sessions_used(mcp_server)

    mcp_server_update(server=tracker, actor=alice, changes={"headers": {"X-Token": "two"}})
    wait_for(lambda: first in closed_sessions(mcp_server))
    echoed = mcp_tool_run(user=alice, name="tracker__echo_header", arguments={"name": "x-token"})
    assert echoed.ok and mcp_server.headers_seen("x-token")[-1] == "two"  # a new session, with the new header
    second = sessions_used(mcp_server)[-1]
    assert second != first

    mcp_server_delete(server=tracker, actor=alice)
    wait_for(lambda: second in closed_sessions(mcp_server))


def test_b11_a_session_the_server_dropped_is_replaced_and_the_call_made_once(alice, tracker, mcp_server):
    assert add(alice).ok
    [first] = sessions_used(mcp_server)
    # The server forgets the session (as a restarted one would): a request naming it is a 404.
    httpx.delete(mcp_server.url, headers={SESSION: first, "mcp-protocol-version": "2025-06-18"}).raise_for_status()
    mcp_server.reset()

    again = add(alice, 20, 22)

    assert (again.ok, again.text) == (True, "42.0")
    assert mcp_server.calls == [("add", {"a": 20, "b": 22})]  # once
    assert first not in sessions_used(mcp_server)[1:] and len(sessions_used(mcp_server)) == 2


def test_a_call_after_the_server_dropped_every_kept_session_is_made_on_a_new_one(alice, tracker, mcp_server):
    # Two calls at once: two sessions, both kept once they answered.
    held = [threading.Thread(target=mcp_tool_run, kwargs={
        "user": alice, "name": "tracker__echo_header", "arguments": {"name": "x-token", "wait": 30}})
        for _ in range(2)]
    for thread in held:
        thread.start()
    wait_for(lambda: len(mcp_server.calls) == 2)
    mcp_server.release()
    for thread in held:
        thread.join()
    kept = sessions_used(mcp_server)
    assert len(kept) == 2
    # The server forgets both (as a restarted one would): the retry must not take the other stale one.
    for session in kept:
        httpx.delete(mcp_server.url, headers={SESSION: session, "mcp-protocol-version": "2025-06-18"}
                     ).raise_for_status()
    mcp_server.reset()

    again = add(alice, 20, 22)

    assert (again.ok, again.text, again.error) == (True, "42.0", "")
    assert mcp_server.calls == [("add", {"a": 20, "b": 22})]  # once


def test_b11_an_idle_session_is_closed_after_its_idle_life(alice, tracker, mcp_server, settings):
    settings.CHATTER_MCP_IDLE_S = 1

    assert add(alice).ok
    [kept] = sessions_used(mcp_server)

    wait_for(lambda: kept in closed_sessions(mcp_server))


def test_b11_a_session_whose_transport_failed_is_not_reused(alice, tracker, mcp_server):
    assert add(alice).ok
    [first] = sessions_used(mcp_server)
    mcp_server.require_token("secret")

    refused = add(alice)

    assert not refused.ok and "HTTP 401" in refused.error
    mcp_server.require_token(None)
    assert add(alice).ok
    assert sessions_used(mcp_server)[-1] != first


def test_a_pool_whose_loop_ended_is_replaced_on_the_next_call(alice, tracker, mcp_server, caplog):
    """The pool's loop ends only on a failure of its own (a task of its group that raises): that is logged, and the
    process's next call gets a new pool, not "Event loop is closed" for every call after."""
    from tools.mcp_pool import mcp_pool

    assert add(alice).ok
    pool = mcp_pool()

    async def its_group_fails():
        async def boom():
            raise RuntimeError("a failure of the pool's own")
        pool._tasks.start_soon(boom)  # (the pool's own task group: what a task of its that raised would do)

    pool.call(its_group_fails)
    wait_for(lambda: not pool.alive)

    assert add(alice).ok
    assert mcp_pool() is not pool
    assert "the MCP session pool's loop ended" in caplog.text


def test_b11_calls_share_one_connection(mcp_server):
    """The SDK reads a call's answer from its SSE stream and closes the response before the server ends the stream;
    the MCP client's transport reads it to its end (tools.mcp_client.ConnectionKeeping), so the next request goes
    on the same connection, not a TCP connection per call. Closed here as the SDK closes it."""
    initialize = {"jsonrpc": "2.0", "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    accept = {"accept": "application/json, text/event-stream"}

    async def exchanges():
        async with checked_http_client() as http:
            for number in range(3):
                async with http.stream("POST", mcp_server.url, json={**initialize, "id": number},
                                       headers=accept) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            break  # the answer is in
                await http.delete(mcp_server.url, headers={SESSION: response.headers[SESSION],
                                                           "mcp-protocol-version": "2025-06-18"})

    mcp_server.reset()
    anyio.run(exchanges)

    posts = [request["client"] for request in mcp_server.requests if request["method"] == "POST"]
    assert len(posts) == 3 and len(set(posts)) == 1
