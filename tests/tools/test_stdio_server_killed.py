"""A declared stdio server (tests/mcp_stdio_server.py) whose process is killed (SIGKILL) while its kept session
answers a call, or between two calls, in chat turns that call it (POST /api/v1/chat/ with `allowed_tools`, the
offline `local` model calling the tool the message names). A call the dead process was answering fails at once as
one to a server that cannot be reached (`could not reach the server (…)`: a ToolCall row that is not ok, its
`tool_called` event, the server marked unhealthy), not as the tool's own error; so does a call sent to a dead process
Chatter had not seen end (its output kept open by another process: only its input is gone). The run goes on, the
dead session is dropped, and the next call starts the process again and gets its answer (the server healthy again).
A process that ends while its session sits idle is let go as it ends: the next call starts a fresh one."""
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_mcp import kept_mcp_sessions_closed
from tests.tools.test_declared_servers import STDIO_SERVER, declare
from tests.tools.test_server_killed_mid_listing import stdio_killer
from tools.mcp_pool import mcp_pool
from tools.models import McpServer
from tools.selectors import mcp_endpoint
from workflows.models import ExecutionEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]  # the stdio server's process
TIMEOUT_S = 30
UNREACHABLE = "could not reach the server ("


@pytest.fixture
def files(api, settings, tmp_path):
    """Declares the stdio server "files" with `env` (call it with the environment it runs with): its server's id."""
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S

    def declared(**env: str) -> str:
        declare(settings, tmp_path / "mcp.json", {"files": {"command": sys.executable, "args": [STDIO_SERVER],
                                                            "env": env}})
        [server] = api.get("/api/v1/tools/servers/").json()["results"]  # the file read, the server asked
        assert server["health"] == "healthy", server
        return server["id"]

    yield declared
    kept_mcp_sessions_closed()  # its processes ended with the test


def pid_called(api) -> tuple[dict, dict]:
    """A chat turn whose model calls files__pid: its execution (as GET executions/{id}/ gives it) and its one call."""
    response = api.post("/api/v1/chat/", {"message": "Which process? files__pid {}", "allowed_tools": ["files__*"]},
                        format="json")
    assert response.status_code == 201, response.content
    execution = api.get(f"/api/v1/executions/{response.json()['execution']['id']}/").json()
    [call] = execution["tool_call_log"]
    assert call["tool"] == "files__pid"
    return execution, call


def assert_unreachable(server_id: str, execution: dict, call: dict) -> None:
    """The call failed as one to a server that cannot be reached, and the run went on."""
    assert execution["status"] == "completed", execution["error_message"]
    assert (call["ok"], call["result"], call["server"]) == (False, "", server_id)
    assert call["error"].startswith(f"the MCP server 'files' could not be asked: {UNREACHABLE}"), call["error"]
    assert call["error"] in execution["output_data"]["content"]  # the model got it, and answered
    called = ExecutionEvent.objects.get(execution_id=execution["id"], event="tool_called").data
    assert (called["tool"], called["ok"], called["error"]) == ("files__pid", False, call["error"])
    server = McpServer.objects.get(pk=server_id)
    assert server.health == "unhealthy" and server.last_error.startswith(UNREACHABLE), server.last_error


def assert_answered_by_another_process(server_id: str, dead_pid: int, api) -> None:
    """The next call starts the server's process again and gets its answer; the server is healthy again."""
    execution, call = pid_called(api)
    assert execution["status"] == "completed", execution["error_message"]
    assert call["ok"] is True, call["error"]
    assert int(call["result"]) != dead_pid
    assert McpServer.objects.get(pk=server_id).health == "healthy"


def test_a_call_whose_stdio_server_is_killed_fails_at_once_and_the_next_starts_it_again(api, files, tmp_path):
    hold = tmp_path / "hold"
    server_id = files(CALL_HOLD=str(hold))
    hold.touch()  # the call of `pid` waits while it exists, its process's id written beside it
    killer = stdio_killer(hold)

    execution, call = pid_called(api)
    took_s = killer.since_kill()

    assert_unreachable(server_id, execution, call)
    assert call["error"].endswith("(its process's output ended)"), call["error"]
    assert took_s < TIMEOUT_S / 2  # a generous bound: it failed as the process ended, not at its timeout (30 s)
    hold.unlink()
    assert_answered_by_another_process(server_id, int(Path(f"{hold}.pid").read_text()), api)


def test_a_call_sent_to_a_stdio_server_killed_since_its_last_call_fails_at_once_and_the_next_starts_it_again(
        api, files, tmp_path):
    keepers = tmp_path / "keepers"  # the processes keeping each server process's output open
    server_id = files(OUTPUT_KEPT=str(keepers))
    try:
        _, first = pid_called(api)
        assert first["ok"] is True, first["error"]
        os.kill(int(first["result"]), signal.SIGKILL)  # its output stays open: only sending to it fails

        execution, call = pid_called(api)

        assert_unreachable(server_id, execution, call)
        assert_answered_by_another_process(server_id, int(first["result"]), api)
    finally:
        for pid in keepers.read_text().split() if keepers.exists() else ():
            os.kill(int(pid), signal.SIGKILL)


def test_a_stdio_server_killed_between_two_calls_is_let_go_and_the_next_call_starts_it_again(api, files):
    server_id = files()
    _, first = pid_called(api)
    assert first["ok"] is True, first["error"]
    os.kill(int(first["result"]), signal.SIGKILL)

    # its kept session is dropped as the process's output ends
    endpoint = mcp_endpoint(server=McpServer.objects.get(pk=server_id))
    deadline = time.monotonic() + 10
    while mcp_pool().kept(endpoint):
        assert time.monotonic() < deadline, "the session of a process that ended is still kept"
        time.sleep(0.02)

    assert_answered_by_another_process(server_id, int(first["result"]), api)
