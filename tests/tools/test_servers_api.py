"""/api/v1/tools/servers/ and /api/v1/tools/ with real API keys against a real MCP server (tests/mcp_server.py):
registration discovers the tools through the official MCP client, the registry lists them qualified for whoever
may see them, headers are write-only and encrypted at rest, and every change is audited with header values
masked (issue 44)."""
import json

import pytest
from django.db import connection

from audit.models import AuditEvent
from core.encryption import secret_decrypt
from tests.factories import StaffFactory
from tests.fixtures_server import refusing_port
from tests.mcp_server import TOOL_NAMES
from tests.tools.conftest import client_with_key
from tools.models import McpServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
TOKEN = "mcp-bearer-SECRET-4b1d9e27c3"
SERVERS = "/api/v1/tools/servers/"


def register(client, url, **fields):
    return client.post(SERVERS, {"name": "tracker", "url": url, **fields}, format="json")


def tool_names(client) -> list[str]:
    response = client.get("/api/v1/tools/")
    assert response.status_code == 200, response.content
    return [tool["name"] for tool in response.json()]


def audit_rows(server_id) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target_id=str(server_id)).order_by("id"))


def test_registering_a_server_discovers_its_tools_and_the_registry_lists_them_qualified(alice_client, mcp_server):
    response = register(alice_client, mcp_server.url)

    assert response.status_code == 201, response.content
    server = response.json()
    assert server["health"] == "healthy" and server["last_error"] == "" and server["tools_refreshed_at"]
    assert server["owner"] == "alice" and server["shared"] is False and server["transport"] == "streamable_http"
    assert {tool["name"] for tool in server["tools"]} == set(TOOL_NAMES)
    tools = {tool["name"]: tool for tool in alice_client.get("/api/v1/tools/").json()}
    assert tools["calculator"]["server"] is None and tools["calculator"]["input_schema"]["required"] == ["expression"]
    assert "current_time" in tools  # the built-ins, with no setup
    add = tools["tracker__add"]
    assert add == {"name": "tracker__add", "description": "Adds two numbers.", "enabled": True,
                   "input_schema": add["input_schema"], "server": {"id": server["id"], "name": "tracker"}}
    assert add["input_schema"]["required"] == ["a", "b"]
    assert {f"tracker__{name}" for name in TOOL_NAMES} <= tools.keys()


def test_the_older_http_sse_transport_is_discovered_too(alice_client, mcp_server):
    response = register(alice_client, mcp_server.sse_url, transport="sse")

    assert response.status_code == 201, response.content
    assert response.json()["health"] == "healthy"
    assert {tool["name"] for tool in response.json()["tools"]} == set(TOOL_NAMES)


def test_headers_reach_the_server_but_are_never_returned_and_are_encrypted_at_rest(alice_client, mcp_server):
    mcp_server.require_token(TOKEN)

    created = register(alice_client, mcp_server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    server_id = created.json()["id"]
    answers = [created, alice_client.get(SERVERS), alice_client.get(f"{SERVERS}{server_id}/"),
               alice_client.post(f"{SERVERS}{server_id}/refresh/"), alice_client.get("/api/v1/tools/"),
               alice_client.patch(f"{SERVERS}{server_id}/", {"enabled": False}, format="json")]

    assert created.status_code == 201 and created.json()["health"] == "healthy"  # the token was sent
    assert set(mcp_server.headers_seen("authorization")) == {f"Bearer {TOKEN}"}
    assert created.json()["header_names"] == ["Authorization"] and "headers" not in created.json()
    for answer in answers:
        assert answer.status_code in (200, 201), answer.content
        assert TOKEN not in answer.content.decode()
    with connection.cursor() as cursor:
        cursor.execute("SELECT headers_encrypted FROM tools_mcpserver WHERE name = %s", ["tracker"])
        (stored,) = cursor.fetchone()
    assert TOKEN not in stored and "Authorization" not in stored
    assert json.loads(secret_decrypt(stored)) == {"Authorization": f"Bearer {TOKEN}"}
    rows = audit_rows(server_id)
    assert [row.action for row in rows] == ["mcp_server.registered", "mcp_server.changed"]
    for row in rows:
        assert TOKEN not in json.dumps(row.data)
        assert row.data["headers"] == {"Authorization": "[redacted]"}


def test_a_server_refusing_the_token_is_registered_unhealthy_and_recovers_when_the_header_is_set(
        alice_client, mcp_server):
    mcp_server.require_token(TOKEN)

    created = register(alice_client, mcp_server.url).json()
    fixed = alice_client.patch(f"{SERVERS}{created['id']}/", {"headers": {"Authorization": f"Bearer {TOKEN}"}},
                               format="json")

    assert created["health"] == "unhealthy" and created["tools"] == [] and created["tools_refreshed_at"] is None
    assert "401" in created["last_error"]
    assert fixed.status_code == 200, fixed.content
    assert fixed.json()["health"] == "healthy" and fixed.json()["last_error"] == ""
    assert len(fixed.json()["tools"]) == len(TOOL_NAMES)


def test_a_server_that_is_down_or_answers_garbage_is_registered_unhealthy_with_the_reason(
        alice_client, mcp_server, settings):
    settings.CHATTER_MCP_TIMEOUT_S = 3
    down = register(alice_client, f"http://127.0.0.1:{refusing_port()}/mcp")
    garbage = register(alice_client, mcp_server.malformed_url, name="garbage")

    assert down.status_code == 201 and down.json()["health"] == "unhealthy"
    assert "could not reach the server" in down.json()["last_error"]
    assert garbage.status_code == 201 and garbage.json()["health"] == "unhealthy"
    assert "could not be read" in garbage.json()["last_error"]
    assert [t for t in tool_names(alice_client) if "__" in t] == []


def test_bob_neither_sees_nor_changes_alices_server(alice_client, bob_client, mcp_server):
    server_id = register(alice_client, mcp_server.url).json()["id"]
    detail = f"{SERVERS}{server_id}/"

    assert bob_client.get(SERVERS).json()["results"] == []
    assert [name for name in tool_names(bob_client) if "__" in name] == []
    assert bob_client.get(detail).status_code == 404
    assert bob_client.patch(detail, {"enabled": False}, format="json").status_code == 404
    assert bob_client.post(f"{detail}refresh/").status_code == 404
    assert bob_client.delete(detail).status_code == 404
    assert McpServer.objects.get().enabled is True


def test_item_01_the_registry_lists_a_private_server_for_its_owner_only_not_bob_nor_staff(
        alice_client, bob_client, staff_client, mcp_server):
    register(alice_client, mcp_server.url)

    mcp_tools = {who: [name for name in tool_names(client) if "__" in name]
                 for who, client in (("alice", alice_client), ("bob", bob_client), ("staff", staff_client))}

    assert sorted(mcp_tools["alice"]) == sorted(f"tracker__{name}" for name in TOOL_NAMES)
    assert mcp_tools["bob"] == [] and mcp_tools["staff"] == []  # staff sees what is shared, not everyone's own
    assert staff_client.get(SERVERS).json()["results"] == []
    for client in (bob_client, staff_client):  # and the built-ins are everyone's, with no setup
        assert {"calculator", "current_time"} <= set(tool_names(client))


def test_staff_shares_a_server_with_everyone_and_only_staff_changes_it(alice_client, staff_client, mcp_server):
    refused = register(alice_client, mcp_server.url, shared=True)
    shared = register(staff_client, mcp_server.url, name="docs", shared=True).json()
    detail = f"{SERVERS}{shared['id']}/"

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert not McpServer.objects.filter(name="tracker").exists()
    assert [s["name"] for s in alice_client.get(SERVERS).json()["results"]] == ["docs"]
    assert "docs__add" in tool_names(alice_client)
    assert alice_client.get(detail).status_code == 200
    assert alice_client.patch(detail, {"enabled": False}, format="json").status_code == 403
    assert alice_client.delete(detail).status_code == 403
    assert alice_client.post(f"{detail}refresh/").status_code == 403
    other_staff = client_with_key(StaffFactory(username="admin2"))
    assert other_staff.patch(detail, {"enabled": False}, format="json").status_code == 200
    assert [t for t in alice_client.get("/api/v1/tools/").json() if t["name"] == "docs__add"][0]["enabled"] is False


def test_sharing_and_unsharing_are_audited(staff_client, mcp_server):
    server_id = register(staff_client, mcp_server.url).json()["id"]

    shared = staff_client.patch(f"{SERVERS}{server_id}/", {"shared": True}, format="json")
    unshared = staff_client.patch(f"{SERVERS}{server_id}/", {"shared": False}, format="json")

    assert shared.status_code == 200 and shared.json()["shared"] is True and unshared.json()["shared"] is False
    assert [row.action for row in audit_rows(server_id)] == [
        "mcp_server.registered", "mcp_server.changed", "mcp_server.shared", "mcp_server.changed",
        "mcp_server.unshared"]


def test_an_own_server_hides_a_shared_one_of_the_same_name(alice_client, staff_client, mcp_server):
    register(staff_client, mcp_server.url, name="tracker", shared=True)
    mine = register(alice_client, mcp_server.url).json()

    tools = [tool for tool in alice_client.get("/api/v1/tools/").json() if tool["name"] == "tracker__add"]

    assert len(tools) == 1 and tools[0]["server"]["id"] == mine["id"]


def test_patch_refresh_and_delete_with_their_audit_rows(alice_client, mcp_server):
    server = register(alice_client, mcp_server.url).json()
    detail = f"{SERVERS}{server['id']}/"

    disabled = alice_client.patch(detail, {"enabled": False}, format="json")
    listed = [t for t in alice_client.get("/api/v1/tools/").json() if t["name"] == "tracker__add"]
    refreshed = alice_client.post(f"{detail}refresh/")
    unchanged = alice_client.patch(detail, {"enabled": False}, format="json")
    deleted = alice_client.delete(detail)

    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert listed[0]["enabled"] is False
    assert refreshed.status_code == 200 and refreshed.json()["tools_refreshed_at"] > server["tools_refreshed_at"]
    assert unchanged.status_code == 200
    assert deleted.status_code == 204 and not McpServer.objects.exists()
    assert alice_client.get(detail).status_code == 404
    assert [row.action for row in audit_rows(server["id"])] == [
        "mcp_server.registered", "mcp_server.changed", "mcp_server.deleted"]
    assert audit_rows(server["id"])[1].data["changed"] == ["enabled"]


def test_a_key_without_the_tools_scope_is_refused_and_writes_nothing(alice, mcp_server):
    narrow = client_with_key(alice, scopes=("chat", "runs", "gateway", "read"))

    listed = narrow.get("/api/v1/tools/")
    servers = narrow.get(SERVERS)
    created = register(narrow, mcp_server.url)

    for response in (listed, servers, created):
        assert response.status_code == 403 and "(tools)" in response.json()["error"]["message"]
    assert not McpServer.objects.exists() and mcp_server.requests == []


@pytest.mark.parametrize(("body", "path"), [
    ({"name": "a__b"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 33}, "name"),
    ({"name": "bad name"}, "name"),
    ({"url": "ftp://example.com/mcp"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"transport": "stdio"}, "transport"),
    ({"headers": {"Host": "evil.example"}}, "headers"),
    ({"headers": {"X-Token": "a\r\nInjected: 1"}}, "headers"),
    ({"headers": {"bad header": "x"}}, "headers"),
    ({"headers": ["Authorization"]}, "headers"),
    ({"headers": {"X-A": "1", "x-a": "2"}}, "headers"),
    ({"owner": "bob"}, "owner"),
    ({"shared": "perhaps"}, "shared"),
])
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(alice_client, mcp_server, body, path):
    response = alice_client.post(SERVERS, {"name": "tracker", "url": mcp_server.url, **body}, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert path in {detail["path"] for detail in response.json()["error"]["details"]}
    assert not McpServer.objects.exists() and not AuditEvent.objects.filter(action__startswith="mcp_server").exists()


def test_a_second_server_of_the_same_name_is_a_400(alice_client, mcp_server):
    first = register(alice_client, mcp_server.url)
    second = register(alice_client, mcp_server.url)
    renamed = alice_client.patch(f"{SERVERS}{register(alice_client, mcp_server.url, name='other').json()['id']}/",
                                 {"name": "tracker"}, format="json")

    assert first.status_code == 201
    assert second.status_code == 400 and second.json()["error"]["details"][0]["path"] == "name"
    assert renamed.status_code == 400
    assert sorted(McpServer.objects.values_list("name", flat=True)) == ["other", "tracker"]


def test_a_slow_refresh_does_not_overwrite_the_tools_of_a_server_moved_meanwhile(alice, alice_client, mcp_server,
                                                                                odd_mcp_server):
    """The refresh asked the old address; the PATCH moved the server and asked the new one: the new list stays."""
    import threading
    import time

    server = register(alice_client, odd_mcp_server.url).json()
    assert "nul" in {tool["name"] for tool in server["tools"]}
    odd_mcp_server.reset().slow_down(1.5)
    answered = {}

    def refresh():
        try:
            answered["refresh"] = client_with_key(alice).post(f"{SERVERS}{server['id']}/refresh/")
        finally:
            connection.close()

    refreshing = threading.Thread(target=refresh)
    refreshing.start()
    deadline = time.monotonic() + 10
    while not any(request["method"] == "POST" for request in odd_mcp_server.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    moved = alice_client.patch(f"{SERVERS}{server['id']}/", {"url": mcp_server.url}, format="json")
    assert moved.status_code == 200 and {tool["name"] for tool in moved.json()["tools"]} == set(TOOL_NAMES)
    refreshing.join(30)

    assert answered["refresh"].status_code == 200
    now = alice_client.get(f"{SERVERS}{server['id']}/").json()
    assert (now["url"], now["health"]) == (mcp_server.url, "healthy")
    assert {tool["name"] for tool in now["tools"]} == set(TOOL_NAMES)
    assert {tool["name"] for tool in answered["refresh"].json()["tools"]} == set(TOOL_NAMES)


def test_registering_a_server_shared_audits_its_sharing(staff_client, mcp_server):
    server_id = register(staff_client, mcp_server.url, shared=True).json()["id"]

    rows = audit_rows(server_id)
    assert [row.action for row in rows] == ["mcp_server.registered", "mcp_server.shared"]
    assert rows[1].data == {"name": "tracker", "owner_id": rows[0].data["owner_id"]}


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/mcp", "http://127.0.0.1:65536/mcp", "http://127.0.0.1:0/mcp"])
def test_a_url_whose_port_is_no_tcp_port_is_a_400_and_writes_nothing(alice_client, url):
    response = register(alice_client, url)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"][0]["path"] == "url"
    assert "is not a TCP port" in response.json()["error"]["message"]
    assert not McpServer.objects.exists()
