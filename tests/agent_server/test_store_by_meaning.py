"""The store searches by meaning (issue 45) when the server has an index, here langgraph.json's store.index with the
real small model (all-MiniLM-L6-v2, in process): the official langgraph-sdk's store calls against a real daphne
server, and a registered graph's own store.put / store.asearch(query=...). Run on SQLite and on PostgreSQL. Every
embedding the index makes (a put's texts, a search's query) is an LLM call of kind `embedding` charged to the store's
owner and held to their budgets, as a collection's are: in a graph's run, a call of the node that used the store."""
from decimal import Decimal
from pathlib import Path

import pytest
from langgraph.store.base import get_text_at_path
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import APIStatusError

from agent_server.models import StoreItem, StoreVector
from engine.embeddings_minilm import minilm_embed
from tests.factories import BudgetFactory
from workflows.models import LLMCall, WorkflowExecution

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


def word_pieces(value: dict | str) -> int:
    """What all-MiniLM-L6-v2 reads of a query, or of an item's value indexed whole ("$": its JSON, as LangGraph's)."""
    return minilm_embed([value if isinstance(value, str) else get_text_at_path(value, "$")[0]])[1]


def test_item_02_store_embeddings_are_llm_calls_charged_to_the_owner_and_held_to_budgets(store_server, alice,
                                                                                           alice_key):
    alice_client = get_sync_client(url=store_server.langgraph_url, api_key=alice_key)
    alice_client.store.put_item(["notes"], "seal", NOTES["seal"])
    alice_client.store.search_items(["notes"], query=QUESTION)

    put, query = LLMCall.objects.filter(execution__owner=alice).order_by("id")
    assert [(call.kind, call.provider, call.requested_model) for call in (put, query)] == [
        ("embedding", "local", "all-MiniLM-L6-v2")] * 2
    # The provider's count of what it read (the model's word pieces), priced as every call: $0.02 a million.
    assert (put.prompt_tokens, query.prompt_tokens) == (word_pieces(NOTES["seal"]), word_pieces(QUESTION))
    assert put.cost == (Decimal(put.prompt_tokens) * Decimal("0.02") / 10**6).quantize(Decimal("1e-8"))
    assert put.execution.input_data["variables"]["purpose"] == {"store_item": {"namespace": ["notes"], "key": "seal"}}
    assert query.execution.input_data["variables"]["purpose"] == {"store_query": QUESTION}
    spent = sum(WorkflowExecution.objects.filter(owner=alice).values_list("cost", flat=True))
    assert spent == put.cost + query.cost > 0

    BudgetFactory(owner=alice, period="month", limit_usd=spent, mode="hard")  # no room left
    for refused in (lambda: alice_client.store.put_item(["notes"], "lid", NOTES["lid"]),
                    lambda: alice_client.store.search_items(["notes"], query=QUESTION)):
        with pytest.raises(APIStatusError) as answer:
            refused()
        assert answer.value.response.status_code == 429
    assert list(StoreItem.objects.values_list("key", flat=True)) == ["seal"]  # the refused put wrote nothing
    assert LLMCall.objects.filter(execution__owner=alice).count() == 2


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

    calls_before = set(LLMCall.objects.values_list("pk", flat=True))
    values = alice_client.runs.wait(None, "memory", input={
        "remember": "Water drips from the kettle when the gasket is worn.", "question": QUESTION})
    in_run = list(LLMCall.objects.exclude(pk__in=calls_before).select_related("execution", "node_execution")
                  .order_by("id"))

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
    # item 2: what the graph's store embedded is two LLM calls of the run, each in the node that used the store.
    assert [(call.kind, call.node_execution.node_id, call.prompt_tokens) for call in in_run] == [
        ("embedding", "remember", word_pieces(item.value)), ("embedding", "recall", word_pieces(QUESTION))]
    run = in_run[0].execution
    assert {call.execution_id for call in in_run} == {run.pk}
    assert run.owner == alice and run.llm_calls == 2 and run.cost == sum(call.cost for call in in_run) > 0
