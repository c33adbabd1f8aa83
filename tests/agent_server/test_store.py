"""The store over the official langgraph-sdk: items under namespaces, owner-scoped (bob never sees alice's)."""
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError

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
    with pytest.raises(NotFoundError):
        await client.store.get_item(["users", "alice", "prefs"], "theme")


def test_another_users_store_is_invisible(server, alice_key, bob_key):
    alice = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bob = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    alice.store.put_item(["shared"], "k", {"owner": "alice"})

    with pytest.raises(NotFoundError):
        bob.store.get_item(["shared"], "k")
    assert bob.store.search_items(["shared"])["items"] == []
    assert bob.store.list_namespaces()["namespaces"] == []
    bob.store.put_item(["shared"], "k", {"owner": "bob"})
    bob.store.delete_item(["shared"], "k")
    assert alice.store.get_item(["shared"], "k")["value"] == {"owner": "alice"}
    with pytest.raises(UnprocessableEntityError):
        alice.store.put_item(["shared"], "bad", "not an object")
