"""Each collection's word statistics for keyword search on SQLite (knowledge/keyword_statistics.py): its chunks,
their characters and each term's chunks, kept by triggers in the transaction that writes the chunks, exact after
documents are added and deleted (one at a time and from several threads at once), a staged chunk moved in, a
collection deleted; never counting another user's chunks. The ranking built on them (knowledge/keyword_search.py)
is BM25's over the collection alone. PostgreSQL ranks by its own full-text search and keeps nothing: SQLite only."""
import math
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from knowledge import keyword_search
from knowledge.ingest import document_ingest
from knowledge.keyword_search import BM25_B, BM25_K1, IDF_FLOOR
from knowledge.keyword_statistics import keyword_statistics_drift, tokens
from knowledge.models import Chunk, CollectionDocument
from knowledge.search import keyword_ids_ranked
from knowledge.services import collection_create, collection_delete, document_add, document_delete
from tests.analytics.test_usage_concurrency import in_thread
from tests.factories import ApiTokenFactory

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite",
                                reason="SQLite's own statistics (the other database ranks by its full-text search)")
MODEL = "local/local-embed-1"


def ingested(collection, actor, title: str, text: str) -> CollectionDocument:
    document, _ = document_add(collection=collection, actor=actor, title=title, text=text)
    document = document_ingest(document)
    assert document.status == "ready", document.error
    return document


def words(collection, pk=None) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT term, chunks FROM knowledge_collection_words WHERE collection_id = %s",
                       [(pk or collection.pk).hex])
        return dict(cursor.fetchall())


def text_of(collection, pk=None) -> tuple[int, int] | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT chunks, characters FROM knowledge_collection_text WHERE collection_id = %s",
                       [(pk or collection.pk).hex])
        return cursor.fetchone()


@pytest.mark.django_db
def test_it_counts_a_collections_chunks_characters_and_terms_as_documents_come_and_go(alice, bob):
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    bobs = collection_create(owner=bob, name="notes", embedding_model=MODEL)
    kettle = ingested(notes, alice, "Kettle", "The kettle boils. Kettles boil water.")
    ingested(notes, alice, "Pump", "The pump hums.")
    ingested(bobs, bob, "Kettle", "A kettle, a kettle.")

    assert {term: words(notes).get(term) for term in ("the", "kettl", "boil", "pump", "a")} == {
        "the": 2, "kettl": 1, "boil": 1, "pump": 1, "a": None}  # one chunk each, stemmed as the index is
    assert text_of(notes) == (2, len("The kettle boils. Kettles boil water.") + len("The pump hums."))
    assert words(bobs) == {"a": 1, "kettl": 1}
    assert keyword_statistics_drift(using=connection) == []

    document_delete(document=kettle, actor=alice)
    assert words(notes) == {"the": 1, "pump": 1, "hum": 1} and text_of(notes) == (1, len("The pump hums."))
    pk = notes.pk
    collection_delete(collection=notes, actor=alice)
    assert words(notes, pk) == {} and text_of(notes, pk) is None
    assert words(bobs) == {"a": 1, "kettl": 1}  # bob's untouched throughout
    assert keyword_statistics_drift(using=connection) == []


@pytest.mark.django_db
def test_it_counts_a_staged_chunk_when_it_moves_into_its_collection_and_a_changed_text(alice):
    """The re-embedding writes chunks in no collection and moves them in with one update (knowledge.reembed)."""
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    document = ingested(notes, alice, "Kettle", "The kettle boils.")
    staged = Chunk.objects.create(text="A staged valve.", dimensions=256, embedding=[1.0] * 256, document=document)
    assert "valv" not in words(notes)

    Chunk.objects.filter(pk=staged.pk).update(collection=notes)
    assert words(notes)["valv"] == 1 and text_of(notes)[0] == 2
    Chunk.objects.filter(pk=staged.pk).update(text="A staged pump.")
    assert "valv" not in words(notes) and words(notes)["pump"] == 1
    assert keyword_statistics_drift(using=connection) == []


@pytest.mark.django_db(transaction=True)
def test_it_stays_exact_when_documents_are_added_and_deleted_from_several_threads(alice):
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    first = [ingested(notes, alice, f"Old {i}", f"Old note {i} about the boiler.") for i in range(6)]

    @in_thread
    def work(i: int) -> None:
        ingested(notes, alice, f"New {i}", f"New note {i} about the boiler and the pump {i % 3}.")
        document_delete(document=CollectionDocument.objects.get(pk=first[i].pk), actor=alice)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(work, range(6)))

    assert words(notes)["boiler"] == 6 and words(notes)["pump"] == 6 and "old" not in words(notes)
    assert keyword_statistics_drift(using=connection) == []


def exhaustive_bm25(collection, words_asked: list[str]) -> list[tuple[int, float]]:
    """BM25 as the module defines it, every chunk of the collection scored: the reference."""
    chunks = dict(Chunk.objects.filter(collection=collection).values_list("id", "text"))
    with connection.cursor() as cursor:
        counts = tokens(cursor, chunks)
        asked = {term for found in tokens(cursor, dict(enumerate(words_asked))).values() for term in found}
    average = sum(len(text) for text in chunks.values()) / len(chunks)
    scores = {}
    for term in asked:
        holding = [chunk_id for chunk_id in chunks if counts[chunk_id][term]]
        idf = max(math.log((len(chunks) - len(holding) + 0.5) / (len(holding) + 0.5)), IDF_FLOOR)
        for chunk_id in holding:
            often, norm = counts[chunk_id][term], 1 - BM25_B + BM25_B * len(chunks[chunk_id]) / average
            scores.setdefault(chunk_id, []).append(idf * often * (BM25_K1 + 1) / (often + BM25_K1 * norm))
    totals = {chunk_id: math.fsum(parts) for chunk_id, parts in scores.items()}
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


@pytest.mark.django_db
def test_it_ranks_as_bm25_over_the_collection_alone_with_common_words_read_last(alice, bob):
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    others = collection_create(owner=bob, name="notes", embedding_model=MODEL)
    document = ingested(notes, alice, "Seed", "seed")
    texts = [" ".join(["the"] * (1 + i % 4) + ["pump"] * (i % 3) + ["valve"] * (i % 7 == 0) + ["boiler"] * (i % 5)
                      + [f"filler{i % 11}"] * (i % 6)) for i in range(80)]
    Chunk.objects.bulk_create([Chunk(text=text, dimensions=256, embedding=[1.0] * 256, document=document,
                                     collection=notes, position=i + 1) for i, text in enumerate(texts)])
    bobs = ingested(others, bob, "Valves", "valve valve valve the the")

    for query, limit in (("the valve", 5), ("the pump boiler", 10), ("the", 3), ("valves and pumps", 8)):
        expected = exhaustive_bm25(notes, query.split())[:limit]
        found = keyword_ids_ranked(collection=notes, query=query, limit=limit)
        assert [(chunk_id, round(score, 12)) for chunk_id, score in found] == [
            (chunk_id, round(score, 12)) for chunk_id, score in expected], query
    before = keyword_ids_ranked(collection=notes, query="the valve", limit=5)
    document_delete(document=bobs, actor=bob)
    ingested(others, bob, "More valves", "valve " * 30)
    assert keyword_ids_ranked(collection=notes, query="the valve", limit=5) == before  # bob's chunks change nothing


def searched(user, collection, query: str, k: int) -> list[tuple[int, float]]:
    """A keyword search through the API: each hit's chunk id and score."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=user, scopes=['knowledge']).key}")
    answer = api.post(f"/api/v1/collections/{collection.pk}/search/", {"query": query, "k": k, "mode": "keyword"},
                      format="json")
    assert answer.status_code == 200, answer.json()
    return [(hit["chunk_id"], round(hit["score"], 9)) for hit in answer.json()["results"]]


def chunks_of(collection, texts: list[str]) -> list[int]:
    document = ingested(collection, collection.owner, "Seed", "seed")
    made = Chunk.objects.bulk_create([Chunk(text=text, dimensions=256, embedding=[1.0] * 256, document=document,
                                            collection=collection, position=i + 1) for i, text in enumerate(texts)])
    return [chunk.pk for chunk in made]


@pytest.mark.django_db
def test_b12_a_word_in_more_chunks_than_a_search_reads_is_ranked_over_its_first_ones(alice, monkeypatch):
    """A search reads at most SCAN_ROWS matches from the index: a word alone in more chunks is ranked over its first
    ones (its oldest chunks), each scored exactly; a newer chunk that BM25 would rank first is not read (B12: a
    common word alone read all its matches, over 100,000 chunks up to 1.4 million, about a second)."""
    monkeypatch.setattr(keyword_search, "SCAN_ROWS", 12)
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    ids = chunks_of(notes, [f"valve part{i} spare" for i in range(29)] + ["valve valve valve"]
                    + [f"filler{i} part" for i in range(40)])
    exact = dict(exhaustive_bm25(notes, ["valve"]))

    found = searched(alice, notes, "valve", k=4)

    assert max(exact, key=exact.get) == ids[29]  # BM25's best, over the collection: the newest holding the word
    first = sorted(ids[:12], key=lambda chunk_id: (-exact[chunk_id], chunk_id))[:4]  # the 12 read, all one match
    assert found == [(chunk_id, round(exact[chunk_id], 9)) for chunk_id in first]


@pytest.mark.django_db
def test_b12_once_the_best_are_found_a_word_past_the_read_budget_is_counted_in_their_text(alice, monkeypatch):
    """The rarer word is read and fills the best `k`; a word whose chunks would take the matches read past SCAN_ROWS
    is not read, but counted in the text of the chunks found, as a common word is: their scores are BM25's, and a
    chunk holding only that word is not found."""
    monkeypatch.setattr(keyword_search, "SCAN_ROWS", 8)
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    padding = " ".join(f"word{i}" for i in range(12))
    ids = chunks_of(notes, [f"gasket valve {padding}", f"gasket {padding}", f"gasket spare valve {padding}",
                            f"gasket spare {padding}"] + [f"valve part{i}" for i in range(8)] + ["valve " * 10]
                    + [f"filler{i} part" for i in range(190)])
    exact = dict(exhaustive_bm25(notes, ["gasket", "valve"]))

    found = searched(alice, notes, "gasket valve", k=3)

    assert max(exact, key=exact.get) == ids[12]  # BM25's best: the chunk of valves alone
    best = sorted(ids[:4], key=lambda chunk_id: (-exact[chunk_id], chunk_id))[:3]
    assert found == [(chunk_id, round(exact[chunk_id], 9)) for chunk_id in best]


@pytest.mark.django_db
def test_the_command_finds_drift_and_recounts_it(alice, capsys):
    notes = collection_create(owner=alice, name="notes", embedding_model=MODEL)
    ingested(notes, alice, "Kettle", "The kettle boils.")
    call_command("knowledge_keyword_statistics")
    assert "zero drift" in capsys.readouterr().out
    with connection.cursor() as cursor:
        cursor.execute("UPDATE knowledge_collection_words SET chunks = 5 WHERE term = 'kettl'")

    with pytest.raises(SystemExit):
        call_command("knowledge_keyword_statistics")
    assert "kettl" in capsys.readouterr().out
    call_command("knowledge_keyword_statistics", "--fix")
    assert words(notes)["kettl"] == 1 and keyword_statistics_drift(using=connection) == []
