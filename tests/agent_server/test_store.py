"""The store over the official langgraph-sdk: items under namespaces, owner-scoped (bob never sees alice's)."""
import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError

pytestmark = pytest.mark.django_db(transaction=True)


async def test_items_are_put_read_searched_listed_and_deleted(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)

    await client.store.put_item(["users", "alice", "prefs"], "theme", {"color": "dark", "size": 2})
    await client.store.put_item(["users", "alice", "prefs"], "lang", {"code": "fr"})
    await client.store.put_item(["users", "alice", "notes"], "n1", {"text": "buy milk"})
    await client.store.put_item(["users", "alice", "prefs"], "theme", {"color": "light", "size": 2})

    item = await client.store.get_item(["users", "alice", "prefs"], "theme")
    assert item["value"] == {"color": "light", "size": 2} and item["namespace"] == ["users", "alice", "prefs"]
    found = await client.store.search_items(["users", "alice"], limit=10)
    assert {i["key"] for i in found["items"]} == {"theme", "lang", "n1"}
    filtered = await client.store.search_items(["users"], filter={"color": "light"})
    assert [i["key"] for i in filtered["items"]] == ["theme"]
    assert [i["key"] for i in (await client.store.search_items(["users"], query="milk"))["items"]] == ["n1"]
    namespaces = await client.store.list_namespaces(prefix=["users"])
    assert namespaces["namespaces"] == [["users", "alice", "notes"], ["users", "alice", "prefs"]]
    assert (await client.store.list_namespaces(max_depth=2))["namespaces"] == [["users", "alice"]]
    assert (await client.store.list_namespaces(suffix=["notes"]))["namespaces"] == [["users", "alice", "notes"]]

    await client.store.delete_item(["users", "alice", "prefs"], "theme")
    assert await client.store.get_item(["users", "alice", "prefs"], "theme") is None  # null, as LangGraph's server
    assert await client.store.get_item(["users", "alice", "prefs"], "lang") is not None
    await client.store.delete_item(["users", "alice", "prefs"], "theme")  # deleting what is gone is no error
    assert await client.store.get_item(["never", "written"], "x") is None


def test_another_users_store_is_invisible(server, alice_key, bob_key):
    alice = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bob = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    alice.store.put_item(["shared"], "k", {"owner": "alice"})

    assert bob.store.get_item(["shared"], "k") is None
    assert bob.store.search_items(["shared"])["items"] == []
    assert bob.store.list_namespaces()["namespaces"] == []
    bob.store.put_item(["shared"], "k", {"owner": "bob"})
    bob.store.delete_item(["shared"], "k")
    assert alice.store.get_item(["shared"], "k")["value"] == {"owner": "alice"}
    with pytest.raises(UnprocessableEntityError):
        alice.store.put_item(["shared"], "bad", "not an object")


def test_put_get_and_delete_answer_as_the_sdk_expects(server, alice_key):
    raw = httpx.Client(base_url=f"{server.langgraph_url}/store", headers={"x-api-key": alice_key}, timeout=30)

    put = raw.put("/items", json={"namespace": ["a"], "key": "k", "value": {"v": 1}, "index": False})
    assert put.status_code == 204 and put.content == b""
    got = raw.get("/items", params={"namespace": "a", "key": "k", "refresh_ttl": "true"})
    assert got.status_code == 200 and got.json()["value"] == {"v": 1}
    deleted = raw.request("DELETE", "/items", json={"namespace": ["a"], "key": "k"})
    assert deleted.status_code == 204 and deleted.content == b""
    missing = raw.get("/items", params={"namespace": "a", "key": "k"})
    assert missing.status_code == 200 and missing.content == b"null"
    assert raw.get("/items", params={"namespace": "a"}).status_code == 422  # no key: a bad request, not "missing"


def test_a_put_langgraph_would_refuse_or_whose_ttl_chatter_cannot_honour_is_a_422_writing_nothing(server, alice_key):
    from agent_server.models import StoreItem

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    with pytest.raises(UnprocessableEntityError) as expiring:
        client.store.put_item(["a"], "k", {"v": 1}, ttl=5)
    assert "ttl" in expiring.value.response.text
    with pytest.raises(UnprocessableEntityError) as reserved:
        client.store.put_item(["langgraph", "x"], "k", {"v": 1})
    assert "langgraph" in reserved.value.response.json()["detail"]
    assert not StoreItem.objects.exists()


def test_a_search_filter_compares_fields_with_langgraphs_operators(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    for key, value in {"low": {"score": 2, "kind": "a"}, "mid": {"score": 4.5, "kind": "b"},
                       "high": {"score": 9, "kind": "b"}, "text": {"score": "n/a", "kind": "c"},
                       "none": {"kind": "b"}}.items():
        client.store.put_item(["docs"], key, value)

    def keys(filter) -> set[str]:
        return {item["key"] for item in client.store.search_items(["docs"], filter=filter)["items"]}

    assert keys({"score": {"$gte": 4.5}}) == {"mid", "high"}
    assert keys({"score": {"$gt": 2, "$lt": 9}}) == {"mid"}
    assert keys({"score": {"$lte": 2}}) == {"low"}
    assert keys({"score": {"$eq": 9}}) == {"high"}
    assert keys({"score": {"$ne": 9}}) == {"low", "mid", "text"}  # an item without the field matches no comparison
    assert keys({"kind": "b", "score": {"$gt": 5}}) == {"high"}  # with a plain field, by containment
    assert keys({"score": {"$gt": "m"}}) == {"text"}  # text with text
    with pytest.raises(UnprocessableEntityError):
        client.store.search_items(["docs"], filter={"score": {"$near": 1}})
    with pytest.raises(UnprocessableEntityError):
        client.store.search_items(["docs"], filter={"score": {"$gt": [1]}})


def test_namespace_listing_takes_wildcard_labels(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    for namespace in (["users", "alice", "prefs"], ["users", "bob", "prefs"], ["users", "bob", "notes"],
                      ["teams", "red", "prefs"]):
        client.store.put_item(namespace, "k", {"v": 1})

    def listed(**match) -> list[list[str]]:
        return client.store.list_namespaces(**match)["namespaces"]

    assert listed(prefix=["users", "*", "prefs"]) == [["users", "alice", "prefs"], ["users", "bob", "prefs"]]
    assert listed(prefix=["*", "bob"]) == [["users", "bob", "notes"], ["users", "bob", "prefs"]]
    assert listed(suffix=["*", "prefs"]) == [["teams", "red", "prefs"], ["users", "alice", "prefs"],
                                             ["users", "bob", "prefs"]]
    assert listed(prefix=["users"], suffix=["bob", "*"]) == [["users", "bob", "notes"], ["users", "bob", "prefs"]]
    assert listed(prefix=["*", "*", "*", "*"]) == []
