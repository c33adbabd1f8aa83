"""/langgraph/'s own routes and its answers outside any route: /ok and /info open to anyone (as the stock server's),
every other route behind a key, and unknown paths and methods answered in the API's JSON shape."""
from importlib.metadata import version
from unittest import mock

import httpx
import pytest
from django.db.utils import OperationalError
from django.test import Client
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError

pytestmark = pytest.mark.django_db(transaction=True)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def test_ok_and_info_answer_without_a_key(server):
    ok = httpx.get(f"{server.langgraph_url}/ok")
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    assert httpx.get(f"{server.langgraph_url}/ok", params={"check_db": "1"}).json() == {"ok": True}

    info = httpx.get(f"{server.langgraph_url}/info")
    assert info.status_code == 200 and info.headers["content-type"] == "application/json"
    body = info.json()
    assert body["langgraph_py_version"] == version("langgraph")
    assert body["flags"] == {"assistants": True, "crons": True, "langsmith": False}
    assert body["metadata"] == {} and body["version"].count(".") == 2


def test_ok_with_check_db_is_503_when_the_database_is_down():
    with mock.patch("core.db.database_answers", side_effect=OperationalError("connection refused")):
        checked = Client().get("/langgraph/ok", {"check_db": "1"})
        unchecked = Client().get("/langgraph/ok")

    assert checked.status_code == 503 and checked.json() == {"detail": "the database does not answer"}
    assert unchecked.status_code == 200  # liveness alone does not ask the database


def test_every_other_route_still_needs_a_key(server, alice_key):
    anonymous = httpx.Client(base_url=server.langgraph_url, timeout=30)  # (httpx's 5 s: short on a loaded suite)
    keyed = httpx.Client(base_url=server.langgraph_url, headers={"x-api-key": alice_key}, timeout=30)

    for method, path in (("GET", "/assistants/universal_chat"), ("POST", "/threads/search"),
                         ("POST", "/store/items/search")):
        refused = anonymous.request(method, path, json={})
        assert refused.status_code == 401, (method, path)
        assert refused.json() == {"detail": "Missing or invalid API key (x-api-key)"}
        assert keyed.request(method, path, json={}).status_code == 200, (method, path)


@pytest.mark.parametrize("path", ["/nope", "/threads/x/runs/y/nope/deeper", "/", "/ok/", "/info/extra"])
def test_an_unknown_path_is_the_apis_404_whatever_the_method_or_key(server, alice_key, path):
    for headers in ({}, {"x-api-key": alice_key}):
        for method in METHODS:
            response = httpx.request(method, f"{server.langgraph_url}{path}", headers=headers, json={"a": 1})
            assert response.status_code == 404, (method, path)
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {"detail": "Not Found"}, (method, path)


async def test_the_sdk_reads_an_unknown_path_as_not_found(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)

    with pytest.raises(NotFoundError):
        await client.http.get("/no/such/route")


def test_unknown_paths_are_json_even_with_debug_on(daphne_server):
    """With DEBUG, Django answers a path no route has with its technical HTML page, never handler404."""
    server = daphne_server(DEBUG="1")

    # A new server's first request is its slowest (it opens the test database): over httpx's 5 s on a loaded CI.
    response = httpx.get(f"{server.base_url}/langgraph/threads/x/nope", timeout=30)

    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/threads", "POST"),
    ("DELETE", "/ok", "GET"),
    ("POST", "/info", "GET"),
    ("PUT", "/store/items/search", "POST"),
    ("PATCH", "/store/items", "GET, PUT, DELETE"),
])
def test_a_wrong_method_is_the_apis_405_naming_the_allowed_ones(server, alice_key, method, path, allowed):
    response = httpx.request(method, f"{server.langgraph_url}{path}", headers={"x-api-key": alice_key})

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response.headers["allow"] == allowed
