"""CORS for browser clients served from another origin (agent-chat-ui, your own page), django-cors-headers: off
unless CHATTER_CORS_ALLOWED_ORIGINS names the origins, and then only on the APIs (/langgraph/, /api/v1/, /v1/). A
browser sends a preflight (OPTIONS, no key) before each call that carries the SDK's headers; it goes on only when
the answer allows its origin, method and headers."""
import httpx
import pytest
from tests.factories import ApiTokenFactory


pytestmark = pytest.mark.django_db(transaction=True)

UI = "http://ui.example:3000"
SDK_HEADERS = ("x-api-key", "authorization", "content-type", "last-event-id", "x-auth-scheme")
API_CALLS = [("POST", "/langgraph/threads/search"), ("GET", "/langgraph/threads/x/runs/y/stream"),
             ("POST", "/api/v1/chat/"), ("POST", "/v1/chat/completions")]

# A server's first request under a loaded run of the suite (its first /langgraph/ request loads LangGraph) has taken
# longer than httpx's default of 5 s.
TIMEOUT_S = 30


def preflight(base_url: str, path: str, *, origin: str, method: str) -> httpx.Response:
    return httpx.options(f"{base_url}{path}", timeout=TIMEOUT_S, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ",".join(SDK_HEADERS)})


def listed(response: httpx.Response, header: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(header, "").split(",") if item.strip()}


@pytest.fixture
def cors_server(shared_daphne_server):
    return shared_daphne_server(CHATTER_CORS_ALLOWED_ORIGINS=f"{UI}, https://admin.example")


def test_a_preflight_from_an_allowed_origin_is_allowed_without_a_key(cors_server):
    for method, path in API_CALLS:
        response = preflight(cors_server.base_url, path, origin=UI, method=method)

        assert response.status_code == 200, path
        assert response.headers["access-control-allow-origin"] == UI, path
        assert method.lower() in listed(response, "access-control-allow-methods"), path
        assert set(SDK_HEADERS) <= listed(response, "access-control-allow-headers"), path
        assert "access-control-allow-credentials" not in response.headers, path  # keys are headers, not cookies


def test_an_answer_to_an_allowed_origin_exposes_what_the_sdk_reads(cors_server, alice):
    key = ApiTokenFactory(user=alice).key
    client = httpx.Client(base_url=f"{cors_server.base_url}/langgraph", headers={"Origin": UI}, timeout=TIMEOUT_S)

    created = client.post("/threads", json={}, headers={"x-api-key": key})
    refused = client.post("/threads/search", json={})  # no key: the browser's script must still read the 401

    for response in (created, refused):
        assert response.headers["access-control-allow-origin"] == UI
        assert {"content-location", "location"} <= listed(response, "access-control-expose-headers")
    assert created.status_code == 200 and refused.status_code == 401


def test_another_origin_is_not_allowed(cors_server):
    for origin in ("http://evil.example:3000", "http://ui.example:3001", "https://ui.example:3000"):
        for method, path in API_CALLS:
            response = preflight(cors_server.base_url, path, origin=origin, method=method)
            assert "access-control-allow-origin" not in response.headers, (origin, path)
            assert "access-control-allow-headers" not in response.headers, (origin, path)
    assert preflight(cors_server.base_url, API_CALLS[0][1], origin="https://admin.example", method="POST").headers[
        "access-control-allow-origin"] == "https://admin.example"  # the second origin configured


def test_pages_outside_the_apis_get_no_cors_headers(cors_server):
    for path in ("/live/", "/admin/login/", "/metrics"):
        response = preflight(cors_server.base_url, path, origin=UI, method="GET")
        assert "access-control-allow-origin" not in response.headers, path
        assert "access-control-allow-origin" not in httpx.get(f"{cors_server.base_url}{path}", timeout=TIMEOUT_S,
                                                              headers={"Origin": UI}).headers, path


def test_cors_is_off_when_no_origin_is_configured(shared_daphne_server):
    server = shared_daphne_server()

    for method, path in API_CALLS:
        response = preflight(server.base_url, path, origin=UI, method=method)
        assert "access-control-allow-origin" not in response.headers, path
        assert "access-control-allow-headers" not in response.headers, path
    assert "access-control-allow-origin" not in httpx.get(f"{server.base_url}/langgraph/info",
                                                          headers={"Origin": UI}).headers
