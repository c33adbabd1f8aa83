"""A server deleted (through the API) while one of its tools is being called: the run completes, the call's
ToolCall row names no server any more (`server` null, `tool` still names it), its `tool_called` event is written,
and the server's secrets the model passed on are still redacted: a JSON workflow's call and a Python graph's alike
read them as the call starts."""
import threading
import time

import pytest
from django.db import connection

from audit.models import AuditEvent
from tests.tools.conftest import client_with_key
from tests.tools.test_workflow_tools import chat_started, run_agent
from tools.models import McpServer
from tools.services import mcp_server_create
from workflows.models import ExecutionEvent, ToolCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
KEY = "victim-SECRET-4e1d"
HELD_S = 60  # the call waits until the test has deleted its server (mcp_server.release()), at most this long


def test_a_server_deleted_during_its_call_leaves_a_completed_run_with_a_serverless_row(
        alice, mcp_server, openai_server):
    alice_client = client_with_key(alice, scopes=("tools", "runs", "read"))
    server = mcp_server_create(owner=alice, name="victim", url=mcp_server.url, headers={"X-Api-Key": KEY})
    # (the model passes the server's key on: its row must not keep it, though the server is gone when it is written)
    openai_server.reply(tool_calls=[{"name": "victim__echo_header", "arguments": {"name": KEY, "wait": HELD_S}},
                                    {"name": "victim__add", "arguments": {"a": 1, "b": 2}}])
    openai_server.reply(content="Done.")
    execution, ended = chat_started(alice, ["victim__*"])
    deadline = time.monotonic() + 30
    while not mcp_server.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mcp_server.calls == [("echo_header", {"name": KEY, "wait": HELD_S})]
    assert alice_client.delete(f"/api/v1/tools/servers/{server.pk}/").status_code == 204
    mcp_server.release()
    assert ended.wait(30)

    execution.refresh_from_db()
    assert execution.status == "completed", execution.error_message
    rows = list(ToolCall.objects.filter(execution=execution).order_by("id").values_list(
        "tool", "server_id", "ok", "arguments"))
    # redacted with the secrets read as its call started
    assert rows[0] == ("victim__echo_header", None, True, {"name": "[redacted]", "wait": HELD_S})
    assert rows[1][:3] == ("victim__add", None, False)  # (the server is gone: the model is told so)
    assert ExecutionEvent.objects.filter(execution=execution, event="tool_called").count() == 2
    assert not McpServer.objects.filter(pk=server.pk).exists()
    body = alice_client.get(f"/api/v1/executions/{execution.pk}/").json()
    assert [(call["tool"], call["server"]) for call in body["tool_call_log"]] == [
        ("victim__echo_header", None), ("victim__add", None)]
    assert KEY not in str(AuditEvent.objects.filter(target_id=str(execution.pk)).values_list("data", flat=True))



def test_a_python_graphs_call_of_a_server_deleted_meanwhile_keeps_its_arguments_redacted(
        alice, mcp_server, openai_server, settings, monkeypatch):
    alice_client = client_with_key(alice, scopes=("tools", "runs", "read"))
    server = mcp_server_create(owner=alice, name="tracker", url=mcp_server.url, headers={"X-Api-Key": KEY})
    openai_server.reply(tool_calls=[{"name": "tracker__echo_header", "arguments": {"name": KEY, "wait": HELD_S}}])
    openai_server.reply(content="Done.")
    ran = []

    def run():
        try:
            ran.append(run_agent(alice, settings, monkeypatch, openai_server, attribute="any_tool_graph"))
        finally:
            connection.close()

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while not mcp_server.calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mcp_server.calls == [("echo_header", {"name": KEY, "wait": HELD_S})]
    assert alice_client.delete(f"/api/v1/tools/servers/{server.pk}/").status_code == 204
    mcp_server.release()
    runner.join(30)

    [execution] = ran
    assert execution.status == "completed", execution.error_message
    row = ToolCall.objects.get(execution=execution)
    # redacted with the secrets read as its call started
    assert (row.tool, row.server_id, row.ok, row.arguments) == (
        "tracker__echo_header", None, True, {"name": "[redacted]", "wait": HELD_S})
    assert ExecutionEvent.objects.filter(execution=execution, event="tool_called").count() == 1
    assert KEY not in str(AuditEvent.objects.filter(target_id=str(execution.pk)).values_list("data", flat=True))
