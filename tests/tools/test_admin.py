"""MCP servers in the admin (item 07 of this suite): staff add and change one through the services the API uses —
the API's validation, the outbound policy on its URL (a refusal shown on the form), headers write-only (a
password-style input never rendered back, kept when left empty, masked in the audit row), no stdio, discovery on
save with its result shown, every write audited; the pages name headers and never show a value. Against the real
MCP server (which, asked to, refuses a request without the token: discovery proves the headers were sent)."""
import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from audit.models import AuditEvent
from core.secrets import REDACTED
from tests.tools.conftest import LOOPBACK
from tools.models import McpServer
from tools.selectors import mcp_server_headers
from tools.services import mcp_server_create

pytestmark = pytest.mark.django_db
TOKEN = "admin-page-SECRET-77f0c1"
OTHER_TOKEN = "admin-page-SECRET-0b9d2e"
ADD = "admin:tools_mcpserver_add"


@pytest.fixture
def server(alice):
    return mcp_server_create(owner=alice, name="tracker", url="https://93.184.215.14/mcp",
                             headers={"Authorization": f"Bearer {TOKEN}"}, discover=False)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def change_url(server) -> str:
    return reverse("admin:tools_mcpserver_change", args=[server.pk])


def form(**fields) -> dict:
    """What the add or change form posts (Django's checkboxes: present when on)."""
    values = {"name": "tracker", "url": "https://93.184.215.14/mcp", "transport": "streamable_http", "headers": "",
              "per_user_headers": "", "enabled": "on", **fields}
    return {name: value for name, value in values.items() if value is not None}


def audited(server) -> list[tuple[str, dict]]:
    return list(AuditEvent.objects.filter(target_id=str(server.pk)).order_by("id").values_list("action", "data"))


def test_item_07_admin_adds_a_server_through_the_service_and_shows_what_discovery_found(
        staff_client, staff, mcp_server, loopback_allowed):
    mcp_server.require_token(TOKEN)

    response = staff_client.post(reverse(ADD), form(url=mcp_server.url,
                                                    headers=f'{{"Authorization": "Bearer {TOKEN}"}}'))

    assert response.status_code == 302, response.content.decode()
    server = McpServer.objects.get()
    assert (server.owner, server.name, server.url, server.header_names, server.health) == (
        staff, "tracker", mcp_server.url, ["Authorization"], "healthy")
    assert {"add", "echo_header"} <= {tool["name"] for tool in server.tools}
    said = [str(message) for message in get_messages(response.wsgi_request)]
    assert any("is healthy; its tools: add" in message for message in said), said
    assert TOKEN not in server.headers_encrypted and mcp_server_headers(server=server) == {
        "Authorization": f"Bearer {TOKEN}"}
    [(action, data)] = audited(server)
    assert action == "mcp_server.registered" and data["headers"] == {"Authorization": REDACTED}
    assert TOKEN not in str(data)
    page = staff_client.get(change_url(server)).content.decode()
    assert "Authorization" in page and "healthy" in page and TOKEN not in page


def test_item_07_admin_add_of_a_server_that_does_not_answer_shows_why(staff_client, mcp_server, loopback_allowed):
    mcp_server.require_token(TOKEN)  # and none is given: a 401

    response = staff_client.post(reverse(ADD), form(url=mcp_server.url), follow=True)

    assert response.status_code == 200
    server = McpServer.objects.get()
    assert server.health == "unhealthy" and server.last_error
    said = [str(message) for message in response.context["messages"]]
    assert any("could not be asked for its tools" in message for message in said), said


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "url", "link-local"),
    ({"url": "http://10.0.0.1/mcp"}, "url", "private"),
    ({"url": "http://127.0.0.1:8000/mcp"}, "url", "loopback"),
    ({"transport": "stdio"}, "transport", "Select a valid choice"),
    ({"name": "two__parts"}, "name", "does not match"),
    ({"headers": '{"Host": "x"}'}, "headers", "set by the MCP transport"),
    ({"headers": "Bearer abc"}, "headers", "not JSON"),
    ({"per_user_headers": "Authorization, bad name"}, "per_user_headers", "not an HTTP header name"),
])
def test_item_07_admin_refuses_on_the_form_and_writes_nothing(staff_client, fields, field, reason):
    response = staff_client.post(reverse(ADD), form(**fields))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert reason in " ".join(errors.get(field, [])), errors
    assert not McpServer.objects.exists() and not AuditEvent.objects.exists()


def test_item_07_admin_refusal_never_renders_the_typed_headers_back(staff_client):
    response = staff_client.post(reverse(ADD), form(url="http://10.0.0.1/mcp",
                                                    headers=f'{{"Authorization": "Bearer {TOKEN}"}}'))

    assert response.status_code == 200 and "private" in response.content.decode()
    assert TOKEN not in response.content.decode()
    assert 'type="password"' in response.content.decode()


def test_item_07_admin_name_taken_is_said_on_the_form(staff_client, staff):
    mcp_server_create(owner=staff, name="tracker", url="https://93.184.215.14/mcp", discover=False)

    response = staff_client.post(reverse(ADD), form())

    assert response.status_code == 200
    assert "already has a server with this name" in str(response.context["adminform"].form.errors["name"])
    assert McpServer.objects.count() == 1


def test_item_07_admin_change_keeps_headers_left_empty_and_refuses_a_private_url(staff_client, server):
    refused = staff_client.post(change_url(server), form(url="http://169.254.169.254/", shared="on"))
    kept = staff_client.post(change_url(server), form(name="tracker2", enabled=None, shared="on"))

    assert refused.status_code == 200 and "link-local" in str(refused.context["adminform"].form.errors["url"])
    assert kept.status_code == 302, kept.content.decode()
    server.refresh_from_db()
    assert (server.name, server.enabled, server.shared, server.url) == (
        "tracker2", False, True, "https://93.184.215.14/mcp")
    assert mcp_server_headers(server=server) == {"Authorization": f"Bearer {TOKEN}"}
    assert [action for action, _ in audited(server)] == [
        "mcp_server.registered", "mcp_server.changed", "mcp_server.shared"]
    assert audited(server)[1][1]["changed"] == ["name", "shared", "enabled"]


def test_item_07_admin_change_checks_only_a_url_that_changed(staff_client, alice, settings):
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = LOOPBACK
    internal = mcp_server_create(owner=alice, name="internal", url="http://127.0.0.1:9/mcp", discover=False)
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = ()  # the operator no longer allows it: switching it off still works

    response = staff_client.post(change_url(internal), form(name="internal", url=internal.url, enabled=None))

    assert response.status_code == 302, response.content.decode()
    internal.refresh_from_db()
    assert internal.enabled is False
    assert audited(internal)[-1][1]["changed"] == ["enabled"]


def test_item_07_admin_change_replaces_or_clears_headers_masked_in_the_audit_row(staff_client, server):
    replaced = staff_client.post(change_url(server), form(headers=f'{{"X-Api-Key": "{OTHER_TOKEN}"}}'))
    server.refresh_from_db()
    headers_after_replace = mcp_server_headers(server=server)
    cleared = staff_client.post(change_url(server), form(clear_headers="on"))

    assert replaced.status_code == 302 and cleared.status_code == 302
    assert headers_after_replace == {"X-Api-Key": OTHER_TOKEN}
    server.refresh_from_db()
    assert (server.header_names, server.headers_encrypted) == ([], "")
    changes = [data for action, data in audited(server) if action == "mcp_server.changed"]
    assert [(data["changed"], data["headers"]) for data in changes] == [
        (["headers"], {"X-Api-Key": REDACTED}), (["headers"], {})]
    assert OTHER_TOKEN not in str(changes) and TOKEN not in str(changes)
    page = staff_client.get(change_url(server)).content.decode()
    assert OTHER_TOKEN not in page and TOKEN not in page


def test_its_pages_show_the_header_names_and_never_a_value(staff_client, server):
    listed = staff_client.get(reverse("admin:tools_mcpserver_changelist"))
    page = staff_client.get(change_url(server))

    assert listed.status_code == 200 and page.status_code == 200
    assert "tracker" in listed.content.decode() and "Authorization" in page.content.decode()
    for response in (listed, page):
        assert TOKEN not in response.content.decode()


def test_a_declared_server_is_shown_read_only(staff_client):
    declared = McpServer.objects.create(name="docs", url="https://93.184.215.14/mcp", declared=True, shared=True)

    page = staff_client.get(change_url(declared))
    refused = staff_client.post(change_url(declared), form(name="renamed"))

    assert page.status_code == 200 and "docs" in page.content.decode()
    assert 'type="password"' not in page.content.decode()
    assert refused.status_code == 403
    declared.refresh_from_db()
    assert declared.name == "docs"


def test_deleting_is_audited(staff_client, server):
    response = staff_client.post(reverse("admin:tools_mcpserver_delete", args=[server.pk]), {"post": "yes"})

    assert response.status_code == 302 and not McpServer.objects.exists()
    assert AuditEvent.objects.filter(target_id=str(server.pk), action="mcp_server.deleted").exists()


def test_item_07_admin_add_says_which_tools_discovery_left_out(staff_client, odd_mcp_server, loopback_allowed):
    response = staff_client.post(reverse(ADD), form(name="odd", url=odd_mcp_server.url), follow=True)

    assert response.status_code == 200
    said = [str(message) for message in response.context["messages"]]
    assert any("is healthy; its tools: nul" in message and "left out 1 tool(s)" in message for message in said), said
