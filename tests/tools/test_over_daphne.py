"""The tools API over a real daphne server (the project's HTTP handler, a request thread per request): registering
a server discovers its tools through the MCP client from inside a request, with the operator's setting in the
server's environment (issue 44)."""
import httpx
import pytest

from tests.factories import ApiTokenFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_registration_and_the_registry_over_http(loopback_server, alice, mcp_server):
    server = loopback_server
    headers = {"Authorization": f"Token {ApiTokenFactory(user=alice, scopes=['tools']).key}"}

    with httpx.Client(base_url=f"{server.base_url}/api/v1", headers=headers, timeout=60) as client:
        created = client.post("/tools/servers/", json={"name": "tracker", "url": mcp_server.url})
        refused = client.post("/tools/servers/", json={"name": "meta", "url": "http://169.254.169.254/"})
        tools = [tool["name"] for tool in client.get("/tools/").json()]

    assert created.status_code == 201, created.text
    assert created.json()["health"] == "healthy"
    assert refused.status_code == 400 and "link-local" in refused.json()["error"]["message"]
    assert {"calculator", "tracker__add", "tracker__echo_header"} <= set(tools)
