"""Issue 44, shared servers with each user's own credentials (item 04 of this suite: items 01-03 are
test_workflow_tools.py's): a staff-shared server declares `per_user_headers`; each user PUTs their own values
(write-only, encrypted, audited masked); a call carries the caller's values and never another user's, on the JSON
workflow path and the Python-graph one; a user who set none gets a refusal naming the server (a tool message in a
run, a 400 on the API) and nothing reaches the server. Against the real MCP server and the OpenAI stub."""
import json

import pytest
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from tests.factories import UserFactory
from tests.tools.conftest import client_with_key
from tests.tools.test_workflow_tools import chat, run_agent, text_of, tool_messages
from tools.models import McpCredential, McpServer
from workflows.models import ToolCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
SERVERS = "/api/v1/tools/servers/"
ALICE_TOKEN = "Bearer alice-SECRET-7f3a91"
BOB_TOKEN = "Bearer bob-SECRET-2c8e44"


@pytest.fixture
def shared(staff_client, mcp_server):
    """The staff's shared `tracker`, asking each user for their own Authorization."""
    response = staff_client.post(SERVERS, {"name": "tracker", "url": mcp_server.url, "shared": True,
                                           "per_user_headers": ["Authorization"]}, format="json")
    assert response.status_code == 201, response.content
    return McpServer.objects.get(pk=response.json()["id"])


def set_credentials(client, server, headers):
    return client.put(f"{SERVERS}{server.pk}/credentials/", {"headers": headers}, format="json")


@pytest.fixture
def with_tools(shared, staff_client, mcp_server):
    """The server's tools discovered by the staff, with their own token (a refresh carries the caller's)."""
    assert set_credentials(staff_client, shared, {"Authorization": "Bearer staff-token"}).status_code == 200
    response = staff_client.post(f"{SERVERS}{shared.pk}/refresh/")
    assert response.status_code == 200 and response.json()["health"] == "healthy", response.content
    assert mcp_server.headers_seen("authorization")[-1] == "Bearer staff-token"
    mcp_server.reset()
    return shared


def test_item_04_credentials_are_write_only_encrypted_and_audited_masked(shared, alice, alice_client, staff, client):
    response = set_credentials(alice_client, shared, {"Authorization": ALICE_TOKEN})

    assert response.status_code == 200, response.content
    assert response.json()["header_names"] == ["Authorization"] and ALICE_TOKEN not in response.content.decode()
    got = alice_client.get(f"{SERVERS}{shared.pk}/credentials/")
    assert got.status_code == 200 and got.json()["header_names"] == ["Authorization"]
    assert ALICE_TOKEN not in got.content.decode()
    assert ALICE_TOKEN not in alice_client.get(f"{SERVERS}{shared.pk}/").content.decode()
    assert alice_client.get(f"{SERVERS}{shared.pk}/").json()["per_user_headers"] == ["Authorization"]
    with connection.cursor() as cursor:  # the column holds ciphertext
        cursor.execute("SELECT headers_encrypted FROM tools_mcpcredential")
        [(stored,)] = cursor.fetchall()
    assert stored and "alice-SECRET" not in stored
    client.force_login(staff)  # the admin names who set theirs, never a value
    page = client.get(reverse("admin:tools_mcpserver_change", args=[shared.pk])).content.decode()
    assert "alice (Authorization)" in page and "alice-SECRET" not in page

    assert alice_client.delete(f"{SERVERS}{shared.pk}/credentials/").status_code == 204
    assert not McpCredential.objects.exists()
    assert alice_client.get(f"{SERVERS}{shared.pk}/credentials/").status_code == 404
    assert alice_client.delete(f"{SERVERS}{shared.pk}/credentials/").status_code == 404
    rows = AuditEvent.objects.filter(action__startswith="mcp_credential.").order_by("id")
    assert [(row.action, row.actor_id, row.data["headers"]) for row in rows] == [
        ("mcp_credential.set", alice.pk, {"Authorization": "[redacted]"}),
        ("mcp_credential.removed", alice.pk, {"Authorization": "[redacted]"})]
    assert not any("alice-SECRET" in json.dumps(row.data) for row in AuditEvent.objects.all())


@pytest.mark.parametrize("headers", [{}, {"X-Other": "v"}, {"Authorization": "a", "X-Other": "v"}],
                         ids=["none", "another_name", "one_too_many"])
def test_item_04_credentials_must_be_exactly_the_servers_per_user_headers(shared, alice_client, headers):
    response = set_credentials(alice_client, shared, headers)

    assert response.status_code == 400, response.content
    assert "exactly these headers: Authorization" in response.json()["error"]["message"]
    assert not McpCredential.objects.exists()


def test_item_04_a_server_asking_for_none_refuses_credentials(alice_client, mcp_server):
    own = alice_client.post(SERVERS, {"name": "own", "url": mcp_server.url}, format="json").json()

    response = alice_client.put(f"{SERVERS}{own['id']}/credentials/", {"headers": {"Authorization": "x"}},
                                format="json")

    assert response.status_code == 400 and "'own'" in response.json()["error"]["message"]
    assert not McpCredential.objects.exists()


def test_item_04_a_refresh_without_ones_own_credentials_is_a_400_naming_the_server(shared, staff_client,
                                                                                    mcp_server):
    assert shared.tools == [] and mcp_server.requests == []  # registered, not asked: the staff set none yet

    response = staff_client.post(f"{SERVERS}{shared.pk}/refresh/")

    assert response.status_code == 400
    assert "'tracker'" in response.json()["error"]["message"] and "Authorization" in response.json()["error"]["message"]
    assert mcp_server.requests == []


def test_item_04_each_user_s_call_carries_their_own_token_never_another_users(
        with_tools, alice, bob, alice_client, bob_client, mcp_server, openai_server):
    set_credentials(alice_client, with_tools, {"Authorization": ALICE_TOKEN})
    set_credentials(bob_client, with_tools, {"Authorization": BOB_TOKEN})
    for _ in range(2):
        openai_server.reply(tool_calls=[{"name": "tracker__echo_header", "arguments": {"name": "authorization"}}])
        openai_server.reply(content="Done.")

    bobs = chat(bob, ["tracker__*"])
    seen_for_bob = mcp_server.headers_seen("authorization")
    mcp_server.reset()
    alices = chat(alice, ["tracker__*"])

    assert bobs.status == alices.status == "completed"
    assert seen_for_bob and set(seen_for_bob) == {BOB_TOKEN}  # every request of bob's call, bob's token only
    assert set(mcp_server.headers_seen("authorization")) == {ALICE_TOKEN}
    # the echo of a credential is scrubbed before the model, the row and the API see it
    assert tool_messages(openai_server.requests[1])[0]["content"] == "[redacted]"
    assert ToolCall.objects.get(execution=bobs).result == "[redacted]"


def test_item_04_a_user_without_credentials_gets_a_tool_message_naming_the_server(
        with_tools, bob, mcp_server, openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}}])
    openai_server.reply(content="I need a token.")

    execution = chat(bob, ["tracker__*"])

    assert execution.status == "completed"
    [answer] = tool_messages(openai_server.requests[1])
    assert answer["content"].startswith("Error: the MCP server 'tracker' needs your own Authorization")
    assert mcp_server.requests == []  # nothing was sent without it
    row = ToolCall.objects.get(execution=execution)
    assert row.ok is False and "'tracker'" in row.error


def test_item_04_a_python_graph_calls_with_the_run_owners_token_or_is_refused(
        with_tools, alice, alice_client, mcp_server, openai_server, settings, monkeypatch):
    set_credentials(alice_client, with_tools, {"Authorization": ALICE_TOKEN})
    carol = UserFactory(username="carol")
    for _ in range(2):
        openai_server.reply(tool_calls=[{"name": "tracker__echo_header", "arguments": {"name": "authorization"}}])
        openai_server.reply(content="Done.")

    alices = run_agent(alice, settings, monkeypatch, openai_server, attribute="any_tool_graph")
    seen_for_alice = mcp_server.headers_seen("authorization")
    mcp_server.reset()
    carols = run_agent(carol, settings, monkeypatch, openai_server, attribute="any_tool_graph")

    assert alices.status == carols.status == "completed", (alices.error_message, carols.error_message)
    assert seen_for_alice and set(seen_for_alice) == {ALICE_TOKEN}
    assert text_of(tool_messages(openai_server.requests[1])[-1]) == "[redacted]"
    assert mcp_server.requests == []  # carol's call sent nothing
    refusal = text_of(tool_messages(openai_server.requests[3])[-1])
    assert "the MCP server 'tracker' needs your own Authorization" in refusal
    assert ToolCall.objects.get(execution=carols).ok is False


def test_one_users_refused_credential_leaves_the_shared_server_healthy_for_others(with_tools, bob, staff, mcp_server,
                                                                                  openai_server):
    """A 401 answering bob's own (expired) token is bob's to fix: the server stays healthy, and bob is told."""
    mcp_server.require_token("staff-token")
    bob_client = client_with_key(bob)
    assert set_credentials(bob_client, with_tools, {"Authorization": "Bearer bob-expired"}).status_code == 200
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}}])
    openai_server.reply(content="Refused.")

    execution = chat(bob, ["tracker__*"])

    assert execution.status == "completed", execution.error_message
    [answer] = tool_messages(openai_server.requests[1])
    assert answer["content"].startswith("Error: the MCP server 'tracker' refused your own credentials (the server "
                                        "answered HTTP 401): set them again with PUT"), answer["content"]
    staff_client = client_with_key(staff)  # a refresh with one's own refused token: a 400, the server unmarked
    assert set_credentials(staff_client, with_tools, {"Authorization": "Bearer staff-expired"}).status_code == 200
    refreshed = staff_client.post(f"{SERVERS}{with_tools.pk}/refresh/")
    assert refreshed.status_code == 400 and refreshed.json()["error"]["code"] == "credentials_refused"
    seen = client_with_key(UserFactory()).get(f"{SERVERS}{with_tools.pk}/").json()
    assert (seen["health"], seen["last_error"]) == ("healthy", "")
    assert [tool["name"] for tool in client_with_key(UserFactory()).get("/api/v1/tools/").json()
            if tool["name"] == "tracker__add"] == ["tracker__add"]


@pytest.mark.parametrize("path", ["server", "credentials"])
def test_a_header_value_that_is_not_ascii_is_refused_and_nothing_is_written(shared, alice, alice_client, path):
    """HTTP sends header values as ASCII: "Bearer café" could never be sent (and would mark the server unhealthy)."""
    if path == "server":
        response = alice_client.post(SERVERS, {"name": "cafe", "url": shared.url, "headers": {"X-Key": "café-key"}},
                                     format="json")
        assert not McpServer.objects.filter(name="cafe").exists()
    else:
        response = set_credentials(alice_client, shared, {"Authorization": "Bearer café"})
        assert not McpCredential.objects.filter(user=alice).exists()

    assert response.status_code == 400, response.content
    assert "printable ASCII only" in json.dumps(response.json())
