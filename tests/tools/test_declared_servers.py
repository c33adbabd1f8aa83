"""MCP servers the operator declares in CHATTER_MCP_SERVERS_FILE (issue 44; tools.declared), the `mcpServers` shape:
a stdio server (tests/mcp_stdio_server.py, the SDK's FastMCP over stdio) and a Streamable HTTP one (the real test
server) are shared with every user, listed by the registry, read-only through the API (403 saying where they are
changed), read again when the file changes; the API never takes a command (400). A JSON workflow calls the stdio
server's tools on one kept process, its environment's values scrubbed from what comes back."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tools.models import McpServer
from workflows.models import ToolCall
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

STDIO_SERVER = str(Path(__file__).resolve().parents[1] / "mcp_stdio_server.py")
SERVERS = "/api/v1/tools/servers/"


def declare(settings, path: Path, servers: dict) -> None:
    path.write_text(json.dumps({"mcpServers": servers}))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a change however quick the rewrite
    settings.CHATTER_MCP_SERVERS_FILE = str(path)


@pytest.fixture
def declared(settings, tmp_path, mcp_server):
    servers = {"files": {"command": sys.executable, "args": [STDIO_SERVER], "env": {"FILES_TOKEN": "env-s3cret"}},
               "docs": {"url": mcp_server.url, "headers": {"X-Docs-Token": "docs-s3cret"}}}
    declare(settings, tmp_path / "mcp.json", servers)
    return servers


@pytest.mark.server  # the stdio server's process
def test_declared_servers_are_shared_listed_and_read_only(declared, bob_client, staff_client, settings, tmp_path):
    tools = bob_client.get("/api/v1/tools/")
    servers = bob_client.get(SERVERS)

    assert tools.status_code == 200 and servers.status_code == 200
    names = {tool["name"] for tool in tools.json()}
    assert {"files__add", "files__echo_env", "files__pid", "docs__add", "docs__echo_header"} <= names
    listed = {server["name"]: server for server in servers.json()["results"]}
    assert {name: (s["transport"], s["declared"], s["shared"], s["owner"], s["health"], s["header_names"])
            for name, s in listed.items()} == {
        "files": ("stdio", True, True, None, "healthy", []),
        "docs": ("streamable_http", True, True, None, "healthy", ["X-Docs-Token"])}
    for response in (tools, servers):
        assert b"s3cret" not in response.content

    files = listed["files"]["id"]
    changed = staff_client.patch(f"{SERVERS}{files}/", {"enabled": False}, format="json")
    deleted = staff_client.delete(f"{SERVERS}{files}/")
    assert (changed.status_code, deleted.status_code) == (403, 403)
    assert "CHATTER_MCP_SERVERS_FILE" in changed.json()["error"]["message"]
    assert McpServer.objects.get(pk=files).enabled is True
    assert staff_client.post(f"{SERVERS}{files}/refresh/").status_code == 200  # asked for its tools again

    declare(settings, tmp_path / "mcp.json", {"files": declared["files"]})  # docs removed from the file
    assert [server["name"] for server in bob_client.get(SERVERS).json()["results"]] == ["files"]


def test_a_declared_url_with_credentials_in_it_is_left_out_and_never_shown(settings, tmp_path, mcp_server,
                                                                          bob_client, caplog):
    """The API refuses such a URL (400); every user reads a declared server's URL."""
    with caplog.at_level("ERROR", logger="tools.declared"):
        declare(settings, tmp_path / "mcp.json", {
            "leaky": {"url": mcp_server.url.replace("http://", "http://svc:hunter2-pw@")},
            "docs": {"url": mcp_server.url}})
        servers = bob_client.get(SERVERS)
        tools = bob_client.get("/api/v1/tools/")

    assert [server["name"] for server in servers.json()["results"]] == ["docs"]
    assert not McpServer.objects.filter(name="leaky").exists()
    assert not [tool for tool in tools.json() if tool["name"].startswith("leaky__")]
    assert "'leaky': \"url\" has credentials in it" in caplog.text
    for said in (servers.content.decode(), tools.content.decode(), caplog.text):
        assert "hunter2" not in said


@pytest.mark.parametrize("body", [
    {"name": "local", "url": "http://127.0.0.1:1/mcp", "transport": "stdio"},
    {"name": "local", "url": "http://127.0.0.1:1/mcp", "command": "python"},
    {"name": "local", "command": "python", "args": ["-m", "http.server"]},
], ids=["stdio_transport", "command_with_url", "command"])
def test_the_api_never_takes_a_stdio_server(alice_client, body):
    response = alice_client.post(SERVERS, body, format="json")

    assert response.status_code == 400
    assert not McpServer.objects.exists()


@pytest.mark.server
def test_a_json_workflow_calls_a_declared_stdio_server_on_one_kept_process(declared, alice, openai_server):
    for calls in ([("files__add", {"a": 2, "b": 40}), ("files__pid", {})],
                  [("files__pid", {}), ("files__echo_env", {"name": "FILES_TOKEN"})]):
        openai_server.reply(tool_calls=[{"name": name, "arguments": arguments} for name, arguments in calls])
        openai_server.reply(content="done")
        execution = execution_create(ChatRequest(owner=alice, message="go", config={
            "provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["files__*"]}))
        assert execution_run(execution_id=execution.pk).status == "completed"

    rows = list(ToolCall.objects.order_by("created_at", "id").values_list("tool", "ok", "result", "server__name"))
    assert [(tool, ok, server) for tool, ok, _, server in rows] == [
        ("files__add", True, "files"), ("files__pid", True, "files"), ("files__pid", True, "files"),
        ("files__echo_env", True, "files")]
    results = {tool: result for tool, _, result, _ in rows}
    assert results["files__add"] == "42.0"
    pids = [result for tool, _, result, _ in rows if tool == "files__pid"]
    assert pids[0] == pids[1] and pids[0].isdigit()  # both runs' calls answered by one kept process
    assert results["files__echo_env"] == "[redacted]"  # its environment reached it, and is not handed back


@pytest.mark.server
def test_a_stdio_servers_environment_value_passed_to_its_tool_is_in_no_stored_call(declared, alice, staff,
                                                                                   openai_server):
    """The environment's values are the server's secrets as its header values are: scrubbed from its answers, and
    from the arguments a call keeps (its row, its audit row) when the model passes one on."""
    openai_server.reply(tool_calls=[{"name": "files__echo_env", "arguments": {"name": "env-s3cret"}}])
    openai_server.reply(content="done")
    execution = execution_create(ChatRequest(owner=alice, message="go", config={
        "provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["files__*"]}))

    assert execution_run(execution_id=execution.pk).status == "completed"
    client = APIClient()
    client.force_login(alice)
    run = client.get(f"/api/v1/executions/{execution.pk}/")
    assert run.status_code == 200, run.content
    assert run.json()["tool_call_log"][0]["arguments"] == {"name": "[redacted]"}
    assert b"s3cret" not in run.content
    client.force_login(staff)
    audited = client.get("/api/v1/audit/events/", {"action": "tool.called", "target_id": str(execution.pk)})
    assert [row["data"]["arguments"] for row in audited.json()["results"]] == [{"name": "[redacted]"}]


@pytest.mark.server
def test_a_shared_servers_last_error_never_quotes_what_a_caller_sent_it(declared, alice, bob_client, openai_server,
                                                                        caplog):
    """A stdio server's stray print of a call's arguments is no message of the protocol: the call fails, and the
    shared server is marked unhealthy saying so by kind, never quoting the line (the SDK's reason quoted it, with
    alice's arguments, on a row every user reads); the SDK's own log record of it says its kind too (its traceback
    quoted the line)."""
    private = "alice private: salary 123456"
    openai_server.reply(tool_calls=[{"name": "files__debug_echo", "arguments": {"text": private}}])
    openai_server.reply(content="done")
    execution = execution_create(ChatRequest(owner=alice, message="go", config={
        "provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["files__*"]}))

    with caplog.at_level("INFO"):
        assert execution_run(execution_id=execution.pk).status == "completed"
    logged = [record for record in caplog.records if record.name.startswith("mcp.client")]
    assert any("json_invalid" in record.getMessage() for record in logged), [r.getMessage() for r in logged]
    assert "123456" not in caplog.text
    call = ToolCall.objects.get(execution=execution)
    assert not call.ok and "not a message of the MCP protocol" in call.error, call.error
    listed = {server["name"]: server for server in bob_client.get(SERVERS).json()["results"]}
    assert listed["files"]["health"] == "unhealthy"
    assert "not a message of the MCP protocol" in listed["files"]["last_error"], listed["files"]["last_error"]
    assert "123456" not in listed["files"]["last_error"] and "123456" not in call.error


@pytest.mark.server
def test_a_stdio_servers_error_output_is_logged_with_its_secrets_scrubbed(declared, alice, openai_server, caplog):
    """What a stdio server prints to its error output reaches this log (`tools.mcp_client`), its environment's
    values scrubbed: the SDK wrote it to the process's stderr as it was, a server's own token with it."""
    openai_server.reply(tool_calls=[{"name": "files__log_env", "arguments": {"name": "FILES_TOKEN"}}])
    openai_server.reply(content="done")
    execution = execution_create(ChatRequest(owner=alice, message="go", config={
        "provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["files__*"]}))

    with caplog.at_level("WARNING", logger="tools.mcp_client"):
        assert execution_run(execution_id=execution.pk).status == "completed"
        deadline = time.monotonic() + 10
        while not any("using FILES_TOKEN=" in record.getMessage() for record in caplog.records) \
                and time.monotonic() < deadline:
            time.sleep(0.05)  # (its reader is a thread of its own)
    said = [record.getMessage() for record in caplog.records if "using FILES_TOKEN=" in record.getMessage()]
    assert said and all("using FILES_TOKEN=[redacted]" in line and "s3cret" not in line for line in said), said


@pytest.mark.server  # the stdio servers' processes
def test_servers_declared_at_once_are_asked_for_their_tools_at_once(declared, bob_client, settings, tmp_path):
    """The request that finds the file changed asks its changed servers all at once: three that never answer hold it
    one timeout, not three (as they did, asked one after another: each started a timeout after the one before)."""
    settings.CHATTER_MCP_TIMEOUT_S = 6
    started = tmp_path / "started"
    silent = {"command": sys.executable, "args": [
        "-c", "import sys, time; open(sys.argv[1], 'a').write(f'{time.time()}\\n'); time.sleep(60)", str(started)]}
    declare(settings, tmp_path / "mcp.json", {**declared, **{f"silent{n}": silent for n in range(3)}})

    listed = bob_client.get(SERVERS)

    assert listed.status_code == 200
    servers = {server["name"]: server for server in listed.json()["results"]}
    assert {name: servers[name]["health"] for name in ("files", "silent0", "silent1", "silent2")} == {
        "files": "healthy", "silent0": "unhealthy", "silent1": "unhealthy", "silent2": "unhealthy"}
    assert all(servers[f"silent{n}"]["last_error"] == "no answer within 6 s" for n in range(3)), servers
    starts = [float(line) for line in started.read_text().split()]
    assert len(starts) == 3 and max(starts) - min(starts) < 3, starts  # one after another: 6 s apart and more
