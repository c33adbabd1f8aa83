"""The store searches by meaning (issue 45) when the server has an index, here langgraph.json's store.index with the
real small model (all-MiniLM-L6-v2, in process): the official langgraph-sdk's store calls against a real daphne
server, and a registered graph's own store.put / store.asearch(query=...). Run on SQLite and on PostgreSQL."""
from pathlib import Path

import pytest
from langgraph_sdk import get_sync_client

from agent_server.models import StoreItem, StoreVector

pytestmark = pytest.mark.django_db(transaction=True)

STORE_GRAPHS = Path(__file__).parent / "graphs" / "store_langgraph.json"
QUESTION = "my kettle leaks, what is broken?"  # no item's text holds it, or any of its words but "kettle"
NOTES = {
    "seal": {"text": "A cracked seal lets water out of the base of the kettle."},
    "cord": {"text": "The power cord is frayed next to the plug, so the kettle will not switch on."},
    "scale": {"text": "Limescale builds up inside when you boil hard water; descale it monthly with vinegar."},
    "lid": {"text": "The lid hinge snapped and the lid no longer closes."},
    "toast": {"text": "Toaster settings: bagels need the defrost button."},
}


@pytest.fixture
def store_server(shared_daphne_server):
    server = shared_daphne_server(CHATTER_GRAPHS=str(STORE_GRAPHS))
    server.langgraph_url = f"{server.base_url}/langgraph"
    return server


def notes_put(client, namespace=("notes",)) -> None:
    for key, value in NOTES.items():
        client.store.put_item(list(namespace), key, value)


def test_issue45_store_search_items_ranks_a_paraphrase_by_meaning(store_server, alice_key, bob_key):
    alice = get_sync_client(url=store_server.langgraph_url, api_key=alice_key)
    notes_put(alice)
    # The question word for word, but not indexed: a put with index=False is never found by a query.
    alice.store.put_item(["notes"], "unindexed", {"text": QUESTION}, index=False)

    found = alice.store.search_items(["notes"], query=QUESTION, limit=10)["items"]
    assert found[0]["key"] == "seal"
    assert {item["key"] for item in found} == set(NOTES)
    scores = [item["score"] for item in found]
    assert scores == sorted(scores, reverse=True) and all(-1 <= score <= 1 for score in scores)
    assert found[0]["value"] == NOTES["seal"] and found[0]["namespace"] == ["notes"]
    assert StoreVector.objects.filter(item__key="unindexed").count() == 0
    assert StoreVector.objects.filter(item__key="seal").values_list("field", "dimensions").get() == ("$", 384)

    paged = alice.store.search_items(["notes"], query=QUESTION, limit=2, offset=1)["items"]
    assert [item["key"] for item in paged] == [item["key"] for item in found[1:3]]
    filtered = alice.store.search_items(["notes"], query=QUESTION, filter={"text": NOTES["lid"]["text"]})["items"]
    assert [item["key"] for item in filtered] == ["lid"]
    # Without a query: every item, newest first, unscored (as LangGraph's server answers).
    plain = alice.store.search_items(["notes"], limit=10)["items"]
    assert len(plain) == 6 and plain[0]["key"] == "unindexed" and {item["score"] for item in plain} == {None}

    bob = get_sync_client(url=store_server.langgraph_url, api_key=bob_key)
    assert bob.store.search_items(["notes"], query=QUESTION)["items"] == []


def test_issue45_store_put_item_embeds_the_paths_it_names(store_server, alice_key):
    alice = get_sync_client(url=store_server.langgraph_url, api_key=alice_key)
    notes_put(alice)
    # Indexed by its tags only, one vector each: the tag about a leak makes it the nearest item.
    alice.store.put_item(["notes"], "tagged", {"title": "weekend", "tags": ["pancake batter", "leaking kettle"]},
                         index=["tags[*]"])
    assert sorted(StoreVector.objects.filter(item__key="tagged").values_list("field", flat=True)) == [
        "tags[*].0", "tags[*].1"]
    assert alice.store.search_items(["notes"], query=QUESTION)["items"][0]["key"] == "tagged"

    # Put again without its index: the old vectors go, the new value is embedded whole.
    alice.store.put_item(["notes"], "tagged", {"title": "weekend", "tags": ["pancake batter"]})
    assert list(StoreVector.objects.filter(item__key="tagged").values_list("field", flat=True)) == ["$"]
    assert alice.store.search_items(["notes"], query=QUESTION)["items"][0]["key"] == "seal"


def test_issue45_a_registered_graph_searches_its_store_by_meaning(store_server, alice, alice_key, bob_key):
    alice_client = get_sync_client(url=store_server.langgraph_url, api_key=alice_key)
    notes_put(alice_client)
    get_sync_client(url=store_server.langgraph_url, api_key=bob_key).store.put_item(
        ["notes"], "bobs", {"text": "The kettle leaks because its seal is cracked."})  # bob's: not alice's run's

    values = alice_client.runs.wait(None, "memory", input={
        "remember": "Water drips from the kettle when the gasket is worn.", "question": QUESTION})

    # The graph's search is the API's: the same items, ranked alike, bob's never among them.
    recalled = [(note["key"], round(note["score"], 5)) for note in values["recalled"]]
    searched = alice_client.store.search_items(["notes"], query=QUESTION, limit=3)["items"]
    assert recalled == [(item["key"], round(item["score"], 5)) for item in searched]
    assert {"seal", "from-graph"} <= {key for key, _ in recalled}
    # What the graph put is alice's item, indexed like any other.
    item = StoreItem.objects.get(key="from-graph")
    assert item.owner == alice and item.vectors.count() == 1
    assert alice_client.store.get_item(["notes"], "from-graph")["value"] == {
        "text": "Water drips from the kettle when the gasket is worn."}
