"""An MCP server's URL passes the destination checks webhooks pass (core.outbound): refused with a 400 and the
reason when it points at loopback, link-local (the cloud metadata address), private or other non-public addresses,
or at a name resolving to one, unless the operator allows the network (CHATTER_OUTBOUND_ALLOWED_NETWORKS, or its
older name CHATTER_WEBHOOK_ALLOWED_NETWORKS); checked again when the client connects (DNS rebinding); a redirect
to another origin is not followed."""
import pytest

from audit.models import AuditEvent
from tests.tools.conftest import LOOPBACK
from tests.webhook_receiver import NON_PUBLIC_URLS, fake_dns  # noqa: F401 - fixture
from tools.models import McpServer

pytestmark = pytest.mark.django_db(transaction=True)
SERVERS = "/api/v1/tools/servers/"
PUBLIC = "93.184.215.14"  # a public address (nothing here reaches it)


def register(client, url, **fields):
    return client.post(SERVERS, {"name": "tracker", "url": url, **fields}, format="json")


def assert_refused(response, reason: str) -> None:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["details"][0]["path"] == "url"
    assert reason in error["message"], error["message"]
    assert not McpServer.objects.exists() and not AuditEvent.objects.filter(action__startswith="mcp_server").exists()


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:8000/mcp", "loopback"),
    ("http://[::1]/mcp", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/mcp", "link-local"),
    ("http://10.0.0.1/mcp", "private"),
    ("http://172.16.5.4/mcp", "private"),
    ("http://192.168.1.1:8080/mcp", "private"),
    ("http://100.64.0.1/mcp", "non-public"),
    ("http://0.0.0.0:5432/mcp", "unspecified"),
    ("http://[::ffff:127.0.0.1]/mcp", "loopback"),
    ("http://metadata.google.internal/computeMetadata/v1/", "private network"),
])
def test_non_public_destinations_are_refused_with_the_reason(alice_client, fake_dns, url, reason):  # noqa: F811
    assert_refused(register(alice_client, url), reason)


@pytest.mark.parametrize("url", NON_PUBLIC_URLS)
def test_every_url_a_webhook_may_not_use_is_refused(alice_client, fake_dns, url):  # noqa: F811
    response = register(alice_client, url)

    assert response.status_code == 400, response.content
    assert not McpServer.objects.exists()


def test_a_name_resolving_to_a_private_address_is_refused(alice_client, fake_dns):  # noqa: F811
    fake_dns.answer("tools.example.com", [PUBLIC, "10.1.2.3"])

    assert_refused(register(alice_client, "https://tools.example.com/mcp"),
                   "tools.example.com resolves to 10.1.2.3, a private address")


def test_without_the_setting_the_loopback_test_server_is_refused(alice_client, mcp_server):
    assert_refused(register(alice_client, mcp_server.url), "CHATTER_OUTBOUND_ALLOWED_NETWORKS")
    assert mcp_server.requests == []  # nothing was sent


def test_the_setting_allows_it_and_so_does_the_webhook_settings_older_name(alice_client, mcp_server, settings):
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = LOOPBACK
    allowed = register(alice_client, mcp_server.url)
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = ()
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = LOOPBACK
    aliased = register(alice_client, mcp_server.url, name="aliased")

    assert allowed.status_code == 201 and allowed.json()["health"] == "healthy"
    assert aliased.status_code == 201 and aliased.json()["health"] == "healthy"


def test_a_name_is_reached_at_the_address_checked_with_its_own_host_header(alice_client, mcp_server, fake_dns,  # noqa: F811
                                                                          settings):
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = LOOPBACK
    fake_dns.answer("tools.example.com", ["127.0.0.1"])

    response = register(alice_client, f"http://tools.example.com:{mcp_server.port}/mcp")

    assert response.status_code == 201 and response.json()["health"] == "healthy"
    assert set(mcp_server.headers_seen("host")) == {f"tools.example.com:{mcp_server.port}"}
    assert len(fake_dns.lookups) >= 1 + len(mcp_server.requests)  # at saving, then for every request sent


def test_a_name_that_rebinds_to_loopback_after_it_was_saved_is_refused_at_connect(alice_client, mcp_server,
                                                                                  fake_dns):  # noqa: F811
    fake_dns.answer("tools.example.com", [PUBLIC], ["127.0.0.1"])  # public when saved, loopback from then on

    response = register(alice_client, f"http://tools.example.com:{mcp_server.port}/mcp")

    assert response.status_code == 201  # the URL was allowed when saved
    server = response.json()
    assert server["health"] == "unhealthy" and server["tools"] == []
    assert server["last_error"].startswith("refused: tools.example.com resolves to 127.0.0.1, a loopback address")
    assert mcp_server.requests == []  # nothing reached the server


def test_a_changed_url_is_checked_too(alice_client, mcp_server, settings):
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = LOOPBACK
    server_id = register(alice_client, mcp_server.url).json()["id"]

    response = alice_client.patch(f"{SERVERS}{server_id}/", {"url": "http://169.254.169.254/mcp"}, format="json")

    assert response.status_code == 400 and "link-local" in response.json()["error"]["message"]
    assert McpServer.objects.get().url == mcp_server.url
    assert [row.action for row in AuditEvent.objects.filter(target_id=server_id)] == ["mcp_server.registered"]


def test_a_redirect_to_another_origin_is_not_followed_even_to_an_allowed_address(alice_client, mcp_server,
                                                                                   settings):
    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = LOOPBACK  # localhost, where it points, is allowed: still not followed

    response = register(alice_client, mcp_server.redirect_url)

    assert response.status_code == 201, response.content
    assert (response.json()["health"], response.json()["tools"]) == ("unhealthy", [])
    assert response.json()["last_error"] == "the server answered HTTP 307"
    assert {request["path"] for request in mcp_server.requests} == {"/redirect"}  # /mcp was never asked
