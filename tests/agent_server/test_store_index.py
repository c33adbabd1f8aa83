"""The store's index (issue 45) in process: how it is configured (CHATTER_STORE_INDEX, langgraph.json's
store.index), what a put embeds (LangGraph's JSON paths, one vector per text), how a search ranks (an item by its
nearest vector), and that a failed embedding writes nothing. The lexical `local` model and the OpenAI stub stand
for the embeddings model here; test_store_by_meaning.py runs the real small model behind a server."""
import json

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from agent_server.models import StoreItem, StoreVector
from agent_server.store import store_item_put, store_item_search
from agent_server.store_index import MAX_TEXTS
from core.env import env_store_index
from core.errors import InvalidInput, UpstreamFailed
from tests.factories import ApiTokenFactory

LEXICAL = {"dims": 64, "embed": "local:local-embed-1", "fields": ["$"]}


def test_issue45_the_index_is_read_from_the_variable_or_langgraph_json(tmp_path, monkeypatch):
    graphs = tmp_path / "langgraph.json"
    graphs.write_text(json.dumps({"graphs": {}, "store": {"index": {"dims": 384, "embed": "local:all-MiniLM-L6-v2"}}}))
    monkeypatch.setenv("CHATTER_GRAPHS", str(graphs))
    monkeypatch.delenv("CHATTER_STORE_INDEX", raising=False)
    assert env_store_index("CHATTER_STORE_INDEX", graphs="CHATTER_GRAPHS") == {
        "dims": 384, "embed": "local:all-MiniLM-L6-v2", "fields": ["$"]}

    monkeypatch.setenv("CHATTER_STORE_INDEX", json.dumps({"dims": 1536, "embed": "openai:text-embedding-3-small",
                                                          "fields": ["text", "tags[*]"]}))
    assert env_store_index("CHATTER_STORE_INDEX", graphs="CHATTER_GRAPHS") == {
        "dims": 1536, "embed": "openai:text-embedding-3-small", "fields": ["text", "tags[*]"]}

    graphs.write_text(json.dumps({"graphs": {}}))
    monkeypatch.delenv("CHATTER_STORE_INDEX")
    assert env_store_index("CHATTER_STORE_INDEX", graphs="CHATTER_GRAPHS") is None


@pytest.mark.parametrize("index", [
    "not json", "[]", '{"dims": 0, "embed": "local:local-embed-1"}', '{"dims": "384", "embed": "local:local-embed-1"}',
    '{"dims": true, "embed": "local:local-embed-1"}', '{"dims": 384, "embed": "all-MiniLM-L6-v2"}',
    '{"dims": 384}', '{"dims": 384, "embed": "local:local-embed-1", "fields": []}',
    '{"dims": 384, "embed": "local:local-embed-1", "fields": "text"}',
    '{"dims": 384, "embed": "local:local-embed-1", "distance_type": "l2"}',
])
def test_issue45_a_malformed_index_stops_start_up(index, monkeypatch):
    monkeypatch.setenv("CHATTER_STORE_INDEX", index)
    with pytest.raises(ImproperlyConfigured, match="CHATTER_STORE_INDEX"):
        env_store_index("CHATTER_STORE_INDEX", graphs="CHATTER_GRAPHS")


@pytest.mark.parametrize("index, says", [
    ({"dims": 384, "embed": "anthropic:claude-3-5-haiku"}, "has no embeddings"),
    ({"dims": 384, "embed": "local:no-such-model"}, "the local provider embeds with"),
    ({"dims": 1536, "embed": "local:all-MiniLM-L6-v2"}, "has 384 dims"),
])
def test_issue45_an_index_chatter_cannot_embed_with_stops_start_up(index, says, settings):
    settings.CHATTER_STORE_INDEX = {**index, "fields": ["$"]}
    with pytest.raises(ImproperlyConfigured, match=says):
        apps.get_app_config("agent_server").ready()  # what every process runs as it starts


def test_issue45_an_item_is_found_by_its_nearest_vector(alice, settings):
    settings.CHATTER_STORE_INDEX = LEXICAL
    store_item_put(owner=alice, namespace=["n"], key="tagged", value={"title": "alpha", "tags": ["red apple", "blue whale"]},
                   index=["tags[*]"])
    store_item_put(owner=alice, namespace=["n"], key="whole", value={"text": "blue whale songs carry far at sea"})
    store_item_put(owner=alice, namespace=["n"], key="off", value={"text": "blue whale"}, index=False)

    found = [(item.key, round(score, 4)) for item, score in store_item_search(
        owner=alice, namespace_prefix=["n"], query="blue whale")]
    # A tag's own vector equals the query's (the lexical model hashes words): score 1; the whole value less.
    assert found[0] == ("tagged", 1.0) and [key for key, _ in found] == ["tagged", "whole"] and found[1][1] < 1
    assert sorted(StoreVector.objects.filter(item__key="tagged").values_list("field", flat=True)) == [
        "tags[*].0", "tags[*].1"]
    assert not StoreVector.objects.filter(item__key="off").exists()


def test_issue45_a_text_without_words_has_no_vector_and_finds_nothing(alice, settings):
    settings.CHATTER_STORE_INDEX = {**LEXICAL, "fields": ["text"]}
    store_item_put(owner=alice, namespace=["n"], key="blank", value={"text": "?!"})  # no word: a zero vector
    store_item_put(owner=alice, namespace=["n"], key="worded", value={"text": "a word"})

    assert list(StoreVector.objects.values_list("item__key", flat=True)) == ["worded"]
    assert store_item_search(owner=alice, namespace_prefix=["n"], query="...") == []
    assert [item.key for item, _ in store_item_search(owner=alice, namespace_prefix=["n"], query="word")] == ["worded"]


def test_issue45_a_search_by_meaning_compares_filters_before_it_pages(alice, bob, settings):
    settings.CHATTER_STORE_INDEX = LEXICAL
    for n, text in enumerate(["leaky tap", "leaky tap washer", "leaky roof", "dry roof"]):
        store_item_put(owner=alice, namespace=["n", "deep"], key=f"k{n}", value={"text": text, "n": n})
    store_item_put(owner=bob, namespace=["n"], key="bobs", value={"text": "leaky tap"})

    def keys(**search) -> list[str]:
        return [item.key for item, _ in store_item_search(owner=alice, namespace_prefix=["n"], query="leaky tap",
                                                          **search)]

    assert keys(limit=10) == ["k0", "k1", "k2", "k3"]
    assert keys(filter={"n": {"$gte": 1}}, limit=2) == ["k1", "k2"]
    assert keys(filter={"n": {"$gte": 1}}, limit=2, offset=1) == ["k2", "k3"]
    assert keys(filter={"n": 3}) == ["k3"]


@pytest.mark.django_db(transaction=True)
def test_issue45_a_failed_embedding_writes_nothing_and_answers_502(alice, openai_server, settings):
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    settings.CHATTER_STORE_INDEX = {"dims": 3, "embed": "openai:text-embedding-3-small", "fields": ["$"]}
    openai_server.always(usage={"prompt_tokens": 2, "total_tokens": 2})  # the stub's vectors: 3 dimensions
    store_item_put(owner=alice, namespace=["n"], key="k", value={"text": "kept"})
    kept = list(StoreVector.objects.values_list("item__value", "field", "embedding"))
    assert [(value, field) for value, field, _ in kept] == [({"text": "kept"}, "$")]

    client = Client()
    key = ApiTokenFactory(user=alice).key
    for failing in ({"status": 500}, {"usage": {"prompt_tokens": 2, "total_tokens": 2}, "dims": 4}):
        settings.CHATTER_STORE_INDEX = {**settings.CHATTER_STORE_INDEX, "dims": failing.pop("dims", 3)}
        openai_server.always(**failing)
        for key_put in ("k", "new"):
            answer = client.put("/langgraph/store/items", {"namespace": ["n"], "key": key_put,
                                                          "value": {"text": "lost"}},
                                content_type="application/json", HTTP_X_API_KEY=key)
            assert answer.status_code == 502 and answer.json()["code"] == "upstream_error", answer.content
        with pytest.raises(UpstreamFailed):
            store_item_search(owner=alice, namespace_prefix=["n"], query="kept")
    assert list(StoreItem.objects.values_list("key", "value")) == [("k", {"text": "kept"})]
    assert list(StoreVector.objects.values_list("item__value", "field", "embedding")) == kept


def test_issue45_a_put_whose_paths_give_too_many_texts_is_refused(alice, settings):
    settings.CHATTER_STORE_INDEX = {**LEXICAL, "fields": ["tags[*]"]}
    store_item_put(owner=alice, namespace=["n"], key="k", value={"tags": [f"tag {n}" for n in range(MAX_TEXTS)]})
    vectors = sorted(StoreVector.objects.values_list("field", flat=True))
    assert len(vectors) > MAX_TEXTS // 2  # (a tag whose two words cancel out in one bucket has no vector)
    with pytest.raises(InvalidInput, match="texts to embed"):
        store_item_put(owner=alice, namespace=["n"], key="k", value={"tags": [f"tag {n}" for n in range(MAX_TEXTS + 1)]})
    assert StoreItem.objects.get().value["tags"][-1] == f"tag {MAX_TEXTS - 1}"
    assert sorted(StoreVector.objects.values_list("field", flat=True)) == vectors


@pytest.mark.parametrize("index", [True, ["ok", ""], ["ok", 3], "text"])
def test_issue45_a_put_naming_bad_paths_is_refused(alice, settings, index):
    settings.CHATTER_STORE_INDEX = LEXICAL
    answer = Client().put("/langgraph/store/items", {"namespace": ["n"], "key": "k", "value": {"ok": 1}, "index": index},
                          content_type="application/json", HTTP_X_API_KEY=ApiTokenFactory(user=alice).key)
    assert answer.status_code == 422 and not StoreItem.objects.exists()
