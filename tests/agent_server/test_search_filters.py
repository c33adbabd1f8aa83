"""Search filters of /langgraph/ (threads, store items, assistants, crons): a metadata or filter key is data, so a key
that reads like an ORM lookup (`regex`, `isnull`, `has_keys`, `a__b`) matches a key of that name and nothing else;
a match is JSON containment (LangGraph's server: PostgreSQL's jsonb @>), the same on SQLite."""
import json

import pytest
from django.db import connection
from django.test import Client

from core.containment import json_contains

pytestmark = pytest.mark.django_db
LOOKUP_LIKE = {"regex": "(", "iregex": "[", "isnull": True, "has_keys": "a", "has_key": "a", "contains": "x",
               "a__b": 1, "a__0": 1, "exact": None, "in": [1], "lt": 3, "__class__": "x", "": "empty"}


def post(client: Client, key: str, url: str, body) -> tuple[int, object]:
    response = client.post(f"/langgraph/{url}", json.dumps(body), content_type="application/json",
                           HTTP_X_API_KEY=key)
    return response.status_code, response.json()


@pytest.fixture
def langgraph(alice_key):
    client = Client()
    return lambda url, body: post(client, alice_key, url, body)


@pytest.mark.parametrize("name", sorted(LOOKUP_LIKE))
def test_it_matches_a_metadata_key_named_like_a_lookup_as_that_key(langgraph, name):
    status, wanted = langgraph("threads", {"metadata": {name: LOOKUP_LIKE[name], "team": "a"}})
    assert status == 200
    langgraph("threads", {"metadata": {"team": "a"}})
    langgraph("threads", {"metadata": {name: "something else", "team": "a"}})

    found = langgraph("threads/search", {"metadata": {name: LOOKUP_LIKE[name]}})
    counted = langgraph("threads/count", {"metadata": {name: LOOKUP_LIKE[name]}})

    assert found[0] == 200 and [t["thread_id"] for t in found[1]] == [wanted["thread_id"]]
    assert counted == (200, 1)


@pytest.mark.parametrize("name", sorted(LOOKUP_LIKE))
def test_it_answers_an_empty_page_when_no_thread_has_a_lookup_like_key(langgraph, name):
    langgraph("threads", {"metadata": {"team": "a", "a": {"b": 1}}})

    assert langgraph("threads/search", {"metadata": {name: LOOKUP_LIKE[name]}}) == (200, [])
    assert langgraph("threads/count", {"metadata": {name: LOOKUP_LIKE[name]}}) == (200, 0)
    assert langgraph("assistants/search", {"metadata": {name: LOOKUP_LIKE[name]}}) == (200, [])
    assert langgraph("runs/crons/search", {"metadata": {name: LOOKUP_LIKE[name]}}) == (200, [])
    assert langgraph("store/items/search", {"namespace_prefix": [], "filter": {name: LOOKUP_LIKE[name]}}) == (
        200, {"items": []})


def test_it_matches_thread_metadata_by_containment(langgraph):
    _, tagged = langgraph("threads", {"metadata": {"tags": ["a", "b"], "owner": {"team": "x", "n": 1}, "ok": True}})
    langgraph("threads", {"metadata": {"tags": ["b"], "owner": {"team": "y"}, "ok": 1}})

    def found(metadata) -> list[str]:
        return [t["thread_id"] for t in langgraph("threads/search", {"metadata": metadata})[1]]

    assert found({"tags": ["a"]}) == [tagged["thread_id"]]
    assert found({"owner": {"team": "x"}}) == [tagged["thread_id"]]
    assert found({"ok": True}) == [tagged["thread_id"]]  # true is not 1
    assert found({"owner": {"n": 1.0}}) == [tagged["thread_id"]]
    assert found({"owner": "x"}) == []


def test_it_filters_store_items_by_keys_that_read_like_lookups(langgraph, alice_key):
    client = Client()
    for key, value in [("odd", {"regex": "(", "a__b": 1}), ("plain", {"regex": "x", "a": {"b": 1}})]:
        response = client.put("/langgraph/store/items", json.dumps({"namespace": ["n"], "key": key, "value": value}),
                              content_type="application/json", HTTP_X_API_KEY=alice_key)
        assert response.status_code == 204

    def keys(filter_) -> list[str]:
        status, body = langgraph("store/items/search", {"namespace_prefix": ["n"], "filter": filter_})
        assert status == 200
        return [item["key"] for item in body["items"]]

    assert keys({"regex": "("}) == ["odd"]
    assert keys({"a__b": 1}) == ["odd"]
    assert keys({"a": {"b": 1}}) == ["plain"]
    assert keys({"isnull": True}) == []


def test_it_filters_only_the_callers_threads(langgraph, bob_key):
    langgraph("threads", {"metadata": {"regex": "("}})

    assert post(Client(), bob_key, "threads/search", {"metadata": {"regex": "("}}) == (200, [])


@pytest.mark.parametrize("document, pattern, expected", [
    ({"a": 1, "b": 2}, {"a": 1}, True), ({"a": 1}, {"a": 1, "b": 2}, False), ({"a": [1, 2, 3]}, {"a": [3, 1]}, True),
    ({"a": [1]}, {"a": 1}, False), ({"a": True}, {"a": 1}, False), ({"a": 1}, {"a": 1.0}, True),
    ({"a": "1"}, {"a": 1}, False), ({"a": None}, {"a": None}, True), ({}, {"a": None}, False),
    ({"a": [{"b": 1, "c": 2}]}, {"a": [{"b": 1}]}, True), (None, {"a": 1}, False), ({"a": 1}, {}, True),
])
def test_containment_on_sqlite_is_postgresqls(document, pattern, expected):
    assert json_contains(document, pattern) is expected
    if connection.vendor == "postgresql":  # the database agrees
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s::jsonb @> %s::jsonb", [json.dumps(document), json.dumps(pattern)])
            assert cursor.fetchone()[0] is expected
