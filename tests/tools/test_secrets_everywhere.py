"""Issue 44, Done means 2: an MCP server's header value and a user's own credential are in no API response, log line,
audit row or export, whatever a run did with them (a model passing one to a tool, a tool quoting the one it was
sent, a tool failing with one in its message). Against the real MCP server and the OpenAI stub, everything read
back through the API (and the admin) as a user and as staff, every log record captured as LOG_LEVEL=DEBUG logs."""
import json
import logging

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.tools.test_workflow_tools import chat
from tools.models import McpCredential, McpServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
TEAM = "team-SECRET-7e41c9d2"
ALICE = "Bearer alice-SECRET-0b9f3a61"
SERVERS = "/api/v1/tools/servers/"


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_item_02_a_header_value_is_in_no_api_response_log_line_audit_row_or_export(
        alice, staff, mcp_server, openai_server, caplog):
    caplog.set_level(logging.DEBUG)  # every logger at its configured level, the root's at DEBUG (LOG_LEVEL=DEBUG)
    as_alice, as_staff = logged_in(alice), logged_in(staff)
    registered = as_staff.post(SERVERS, {"name": "tracker", "url": mcp_server.url, "shared": True,
                                         "headers": {"X-Team-Key": TEAM}, "per_user_headers": ["Authorization"]},
                               format="json")
    server_id = registered.json()["id"]
    as_staff.put(f"{SERVERS}{server_id}/credentials/", {"headers": {"Authorization": "Bearer staff"}}, format="json")
    credential = as_alice.put(f"{SERVERS}{server_id}/credentials/", {"headers": {"Authorization": ALICE}},
                              format="json")
    refreshed = as_staff.post(f"{SERVERS}{server_id}/refresh/")
    assert (registered.status_code, credential.status_code, refreshed.json()["health"]) == (201, 200, "healthy")
    openai_server.reply(tool_calls=[
        {"name": "tracker__fail", "arguments": {"message": f"keys {TEAM} and {ALICE}"}},
        {"name": "tracker__echo_header", "arguments": {"name": "x-team-key"}},
        {"name": "tracker__echo_header", "arguments": {"name": "authorization"}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["tracker__*"])

    assert execution.status == "completed", execution.error_message
    assert set(mcp_server.headers_seen("x-team-key")) == {TEAM}  # the secrets were sent where they belong
    assert ALICE in mcp_server.headers_seen("authorization")
    dataset = as_alice.post("/api/v1/datasets/", {"name": "from a run"}, format="json").json()
    assert as_alice.post(f"/api/v1/datasets/{dataset['id']}/items/", {"execution": str(execution.pk)},
                         format="json").status_code == 201
    run = f"/api/v1/executions/{execution.pk}/"
    answers = {
        "servers": as_alice.get(SERVERS), "server": as_alice.get(f"{SERVERS}{server_id}/"),
        "credentials": as_alice.get(f"{SERVERS}{server_id}/credentials/"), "tools": as_alice.get("/api/v1/tools/"),
        "run": as_alice.get(run), "events": as_alice.get(f"{run}events/", {"page_size": 100}),
        "audit": as_staff.get("/api/v1/audit/events/", {"page_size": 100}),
        "analytics": as_alice.get("/api/v1/analytics/tools/", {"group_by": "server", "format": "csv"}),
        "export_jsonl": as_alice.get(f"/api/v1/datasets/{dataset['id']}/export/"),
        "export_csv": as_alice.get(f"/api/v1/datasets/{dataset['id']}/export/", {"format": "csv"}),
        "admin_server": as_staff.get(reverse("admin:tools_mcpserver_change", args=[server_id])),
        "admin_calls": as_staff.get(reverse("admin:workflows_toolcall_changelist")),
        "admin_run": as_staff.get(reverse("admin:workflows_workflowexecution_change", args=[execution.pk])),
    }
    for what, answer in answers.items():
        assert answer.status_code == 200, (what, answer.content[:300])
        body = b"".join(answer.streaming_content) if answer.streaming else answer.content
        assert b"SECRET" not in body, what
    assert "[redacted]" in answers["run"].content.decode()  # the tool's echo was there, scrubbed
    assert len(answers["audit"].json()["results"]) >= 5  # registration, credentials, refresh's, tool calls
    assert not [row.action for row in AuditEvent.objects.all() if "SECRET" in json.dumps(row.data)]
    # Chatter's log lines (the test MCP server's own, on its thread, are the team's server's, not Chatter's)
    logged = [record.getMessage() for record in caplog.records if record.threadName != "mcp-test-server"]
    assert logged and not [line for line in logged if "SECRET" in line]
    stored = McpServer.objects.values_list("headers_encrypted", flat=True).get()
    assert TEAM not in stored and not McpCredential.objects.filter(headers_encrypted__contains="SECRET").exists()
