"""MCP servers in the admin: listed with their tools and health, never a header's value; switching one off,
sharing it and deleting it go through the audited services."""
import pytest
from django.urls import reverse

from audit.models import AuditEvent
from tools.models import McpServer
from tools.services import mcp_server_create

pytestmark = pytest.mark.django_db
TOKEN = "admin-page-SECRET-77f0c1"


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


def test_its_pages_show_the_header_names_and_never_a_value(staff_client, server):
    listed = staff_client.get(reverse("admin:tools_mcpserver_changelist"))
    page = staff_client.get(change_url(server))

    assert listed.status_code == 200 and page.status_code == 200
    assert "tracker" in listed.content.decode() and "Authorization" in page.content.decode()
    for response in (listed, page):
        assert TOKEN not in response.content.decode()
    assert staff_client.get(reverse("admin:tools_mcpserver_add")).status_code == 403


def test_switching_off_and_sharing_are_audited_and_the_rest_cannot_change(staff_client, server):
    response = staff_client.post(change_url(server), {"shared": "on", "name": "renamed",
                                                      "url": "http://169.254.169.254/"})

    assert response.status_code == 302, response.content
    server.refresh_from_db()
    assert (server.enabled, server.shared, server.name, server.url) == (
        False, True, "tracker", "https://93.184.215.14/mcp")
    actions = list(AuditEvent.objects.filter(target_id=str(server.pk)).values_list("action", flat=True))
    assert actions == ["mcp_server.registered", "mcp_server.changed", "mcp_server.shared"]


def test_deleting_is_audited(staff_client, server):
    response = staff_client.post(reverse("admin:tools_mcpserver_delete", args=[server.pk]), {"post": "yes"})

    assert response.status_code == 302 and not McpServer.objects.exists()
    assert AuditEvent.objects.filter(target_id=str(server.pk), action="mcp_server.deleted").exists()
