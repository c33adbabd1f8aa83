"""Issue 44, traced safely and marked when failing (item 06 of this suite): a ToolCall row (and its `tool.called`
audit row) keeps none of the registered secrets of its server — the server's header values and the caller's own
credential — whether the model passed one in the arguments or the tool quoted it; and a server that cannot be
asked is marked unhealthy (healthy again once it answers) from the Python-graph path as from the JSON-workflow
path, by the same code. Against the real MCP server and the OpenAI stub."""
import base64
import json
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from tests.tools.test_workflow_tools import chat, run_agent, text_of, tool_messages
from tools.models import McpServer
from tools.services import mcp_credential_set, mcp_server_create
from workflows.models import ToolCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
TEAM = "team-SECRET-51c0e2"
BOBS = "Bearer bob-SECRET-9d7a10"


@pytest.fixture
def shared(staff, bob, mcp_server):
    server = mcp_server_create(owner=staff, name="tracker", url=mcp_server.url, shared=True,
                               headers={"X-Team-Key": TEAM}, per_user_headers=["Authorization"], discover=False)
    mcp_credential_set(server=server, user=staff, headers={"Authorization": "Bearer staff"})
    mcp_credential_set(server=server, user=bob, headers={"Authorization": BOBS})
    client = APIClient()
    client.force_login(staff)
    assert client.post(f"/api/v1/tools/servers/{server.pk}/refresh/").json()["health"] == "healthy"
    mcp_server.reset()
    return server


def leaks(execution) -> list[str]:
    """Where a secret is still stored: the run's ToolCall rows and its audit rows."""
    stored = [json.dumps([row.arguments, row.result, row.error]) for row in ToolCall.objects.filter(
        execution=execution)]
    stored += [json.dumps(row.data) for row in AuditEvent.objects.filter(target_id=str(execution.pk))]
    return [text for text in stored if TEAM in text or "bob-SECRET" in text]


LEAKY_CALLS = [{"name": "tracker__fail", "arguments": {"message": f"keys: {TEAM} / {BOBS}"}},
               {"name": "tracker__echo_header", "arguments": {"name": "x-team-key"}}]


def test_item_06_a_json_workflows_tool_calls_keep_no_registered_secret(shared, bob, mcp_server, openai_server):
    openai_server.reply(tool_calls=LEAKY_CALLS)
    openai_server.reply(content="Done.")

    execution = chat(bob, ["tracker__*"])

    assert execution.status == "completed"
    assert mcp_server.calls[0] == ("fail", {"message": f"keys: {TEAM} / {BOBS}"})  # the server got them as sent
    failed, echoed = ToolCall.objects.filter(execution=execution).order_by("id")
    assert failed.arguments == {"message": "keys: [redacted] / [redacted]"}
    assert echoed.result == "[redacted]"
    assert leaks(execution) == []


def test_item_06_a_python_graphs_tool_calls_keep_no_registered_secret(shared, bob, mcp_server, openai_server,
                                                                      settings, monkeypatch):
    openai_server.reply(tool_calls=LEAKY_CALLS)
    openai_server.reply(content="Done.")

    execution = run_agent(bob, settings, monkeypatch, openai_server, attribute="any_tool_graph")

    assert execution.status == "completed", execution.error_message
    # a Python graph's ToolNode runs the two calls at once: their rows come in either order
    rows = {row.tool: row for row in ToolCall.objects.filter(execution=execution)}
    assert rows["tracker__fail"].arguments == {"message": "keys: [redacted] / [redacted]"}
    assert rows["tracker__echo_header"].result == "[redacted]"
    assert leaks(execution) == []


def test_item_06_a_python_graph_marks_a_server_it_cannot_ask_unhealthy_and_healthy_again(
        alice, mcp_server, openai_server, settings, monkeypatch):
    tracker = mcp_server_create(owner=alice, name="tracker", url=mcp_server.url)
    assert tracker.health == "healthy"
    McpServer.objects.filter(pk=tracker.pk).update(url=mcp_server.url.replace(str(mcp_server.port), "1"))
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}}])
    openai_server.reply(content="It is down.")

    execution = run_agent(alice, settings, monkeypatch, openai_server)

    assert execution.status == "completed", execution.error_message
    tracker.refresh_from_db()
    assert tracker.health == "unhealthy" and "could not reach the server" in tracker.last_error
    assert not ToolCall.objects.get(execution=execution).ok

    McpServer.objects.filter(pk=tracker.pk).update(url=mcp_server.url)
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}}])
    openai_server.reply(content="3.")
    assert run_agent(alice, settings, monkeypatch, openai_server).status == "completed"
    tracker.refresh_from_db()
    assert (tracker.health, tracker.last_error) == ("healthy", "")


def test_a_short_header_value_is_no_secret_and_results_keep_it(alice, mcp_server, openai_server):
    """A tenant number as a header ("1") would otherwise turn every "1" of every result into "[redacted]"."""
    mcp_server_create(owner=alice, name="tenant", url=mcp_server.url, headers={"X-Tenant": "1", "X-Key": TEAM})
    openai_server.reply(tool_calls=[{"name": "tenant__add", "arguments": {"a": 10, "b": 1}},
                                    {"name": "tenant__echo_header", "arguments": {"name": "x-key"}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["tenant__*"])

    added, echoed = ToolCall.objects.filter(execution=execution).order_by("id")
    assert (added.arguments, added.result) == ({"a": 10, "b": 1}, "11.0")
    assert echoed.result == "[redacted]"  # a value long enough to be a secret still is one
    assert [message["content"] for message in openai_server.requests[1].body["messages"]
            if message["role"] == "tool"] == ["11.0", "[redacted]"]


BEARER = "tk-SECRET/9d7a+10=="  # a token with the characters a URL encodes
PASSWORD = "pw-SECRET-5e1f"
BASIC = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()


def test_a_credential_quoted_without_its_scheme_decoded_or_url_encoded_is_redacted_everywhere(
        alice, staff, mcp_server, openai_server):
    """A server's `Authorization: Bearer <token>` is a secret in every form text carries it: the token alone (a
    tool saying which token it refused), URL-encoded (a URL quoting it), a Basic credential's user:password and
    password decoded. Neither the stored call, its events, its audit row nor the model's tool message keeps one."""
    mcp_server_create(owner=alice, name="tracker", url=mcp_server.url,
                      headers={"Authorization": f"Bearer {BEARER}", "X-Upstream-Auth": f"Basic {BASIC}"})
    quoted = (f"token {BEARER} refused by https://x.test/?t={quote(BEARER, safe='')}; "
              f"svc:{PASSWORD} too (password {PASSWORD}, sent as {BASIC})")
    openai_server.reply(tool_calls=[{"name": "tracker__fail", "arguments": {"message": quoted}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["tracker__*"])

    assert execution.status == "completed", execution.error_message
    assert mcp_server.calls == [("fail", {"message": quoted})]  # the server got them as the model sent them
    redacted = ("token [redacted] refused by https://x.test/?t=[redacted]; [redacted] too (password [redacted], "
                "sent as [redacted])")
    call = ToolCall.objects.get(execution=execution)
    said = f"Error executing tool fail: {redacted}"  # (the SDK's words for a tool that raised)
    assert (call.arguments, call.error) == ({"message": redacted}, said)
    assert [text_of(message) for message in tool_messages(openai_server.requests[1])] == [f"Error: {said}"]
    client = APIClient()
    client.force_login(alice)
    run = client.get(f"/api/v1/executions/{execution.pk}/")
    events = client.get(f"/api/v1/executions/{execution.pk}/events/", {"page_size": 100})
    assert run.json()["tool_call_log"][0]["arguments"] == {"message": redacted}
    assert b"SECRET" not in run.content + events.content and b"tool_called" in events.content
    client.force_login(staff)
    audited = client.get("/api/v1/audit/events/", {"action": "tool.called", "target_id": str(execution.pk)})
    assert [(row["data"]["arguments"], row["data"]["error"]) for row in audited.json()["results"]] == [
        ({"message": redacted}, said)]
