"""Issue 45, POST /api/v1/collections/{id}/search/ on SQLite (sqlite-vec, FTS5) and PostgreSQL (pgvector, full-text
search): make test runs this file on each. With the real small model (all-MiniLM-L6-v2, in-process) a paraphrase
that shares no word with its answer finds it first by meaning (vector and hybrid), where words alone find nothing;
the query's embedding is the searcher's LLM call; filters, the score threshold and bad input."""
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from knowledge import search as knowledge_search
from knowledge.models import CollectionDocument
from knowledge.services import chunks_create
from tests.factories import ApiTokenFactory
from workflows.models import LLMCall

pytestmark = pytest.mark.django_db

QUESTION = "My kettle leaks, what is broken?"
DOCUMENTS = [
    ("Seal", "A cracked seal lets water out of the appliance.", {"topic": "appliances"}),
    ("Gears", "Index the rear derailleur by turning the barrel adjuster.", {"topic": "bicycles"}),
    ("Budgets", "Budgets reserve an estimate before each call and settle after it, so racing calls cannot "
                "overspend.", {"topic": "accounting"}),
]


@pytest.fixture
def manuals(alice):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")
    collection = api.post("/api/v1/collections/", {"name": "manuals", "embedding_model": "local/all-MiniLM-L6-v2"},
                          format="json").json()
    api.url = f"/api/v1/collections/{collection['id']}/search/"
    for title, text, metadata in DOCUMENTS:
        added = api.post(f"/api/v1/collections/{collection['id']}/documents/",
                         {"title": title, "text": text, "metadata": metadata}, format="json").json()
        assert added["status"] == "ready", added
    return api


def search(api, **body) -> list[dict]:
    answer = api.post(api.url, body, format="json")
    assert answer.status_code == 200, answer.json()
    return answer.json()["results"]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_a_search_reads_its_hits_documents_titles_not_their_whole_text(manuals, mode):
    with CaptureQueriesContext(connection) as queries:
        hits = search(manuals, query="seal water appliance kettle", k=3, mode=mode)

    assert hits and {hit["title"] for hit in hits} <= {title for title, _, _ in DOCUMENTS}
    read = [query["sql"] for query in queries.captured_queries if "knowledge_collectiondocument" in query["sql"]]
    assert read and not any(f'"knowledge_collectiondocument"."{column}"' in sql
                            for sql in read for column in ("text", "file_data")), read


def test_item_03_a_paraphrase_finds_its_document_first_by_meaning_not_by_words(manuals, alice):
    calls_before = LLMCall.objects.filter(execution__owner=alice).count()

    hybrid = search(manuals, query=QUESTION, k=3)
    vector = search(manuals, query=QUESTION, k=3, mode="vector")
    keyword = search(manuals, query=QUESTION, k=3, mode="keyword")

    assert [hit["title"] for hit in hybrid][:1] == [hit["title"] for hit in vector][:1] == ["Seal"]
    assert hybrid[0]["text"] == DOCUMENTS[0][1] and hybrid[0]["position"] == 0
    assert vector[0]["score"] > vector[1]["score"] + 0.1 and 0 < vector[0]["score"] <= 1
    assert keyword == []  # no word in common: what keyword search alone misses
    queries = LLMCall.objects.filter(execution__owner=alice).order_by("id")[calls_before:]
    assert [call.kind for call in queries] == ["embedding", "embedding"]  # hybrid's and vector's, not keyword's
    assert queries[0].execution.input_data["variables"]["purpose"]["query"] == QUESTION
    assert queries[0].prompt_tokens > 0


def test_item_03_words_filters_and_threshold(manuals):
    by_words = search(manuals, query="barrel adjuster", mode="keyword")
    fused = search(manuals, query="barrel adjuster")
    filtered = search(manuals, query=QUESTION, mode="vector", filters={"topic": "accounting"})
    above = search(manuals, query=QUESTION, mode="vector", score_threshold=0.99)

    assert [hit["title"] for hit in by_words] == ["Gears"] and by_words[0]["score"] > 0
    assert fused[0]["title"] == "Gears" and set(fused[0]["scores"]) == {"vector", "keyword"}
    assert [hit["title"] for hit in filtered] == ["Budgets"]
    assert above == []


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_b12_a_search_reads_the_chunks_it_returns_in_one_query(manuals, mode):
    """Each side ranks chunk ids; only the chunks kept are read, once (B12: at 100,000 chunks a hybrid search read
    the 40 of its keyword side and the 20 of its vector side, each in a query of its own)."""
    with CaptureQueriesContext(connection) as queries:
        hits = search(manuals, query="the cracked seal lets water out", k=2, mode=mode)
    assert hits and hits[0]["title"] == "Seal"
    read = [query["sql"] for query in queries.captured_queries if '"knowledge_chunk"."text"' in query["sql"]]
    assert len(read) == 1, read


def test_item_03_a_filter_key_named_like_an_orm_lookup_is_a_metadata_key(manuals):
    """`contains` and `topic__startswith` are keys the documents do not have: nothing matches (as ORM lookups on the
    metadata, the first matched every document holding the value and the second every topic starting "acc")."""
    for filters in ({"contains": "accounting"}, {"topic__startswith": "acc"}, {"isnull": False}):
        assert search(manuals, query=QUESTION, mode="vector", filters=filters) == [], filters


def test_item_03_bad_search_input_is_a_400(manuals):
    bad = [({"query": "x", "mode": "fuzzy"}, "mode"), ({"query": "x", "k": 0}, "k"), ({"query": ""}, "query"),
           ({"query": "x", "filters": {"a b": 1}}, "filters.a b"),
           ({"query": "x", "filters": {"topic": [1]}}, "filters.topic")]

    answers = [manuals.post(manuals.url, body, format="json") for body, _ in bad]

    assert [answer.status_code for answer in answers] == [400] * len(bad)
    assert [answer.json()["error"]["details"][0]["path"] for answer in answers] == [path for _, path in bad]


@pytest.fixture
def lexical(alice):
    """A collection of the lexical model, whose vector of a text with no word is all zeros: one such document."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")
    collection = api.post("/api/v1/collections/", {"name": "lexical", "embedding_model": "local/local-embed-1"},
                          format="json").json()
    api.url = f"/api/v1/collections/{collection['id']}/search/"
    for title, text in (("Kettle", "Kettles boil water quickly."), ("Emoji", "🙂👍 !!!")):
        added = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": title, "text": text},
                         format="json").json()
        assert added["status"] == "ready", added
    return api


def test_it_finds_nothing_by_meaning_in_a_chunk_or_query_of_no_direction(lexical, alice):
    """A zero vector has no cosine distance (sqlite-vec: NULL, pgvector: NaN): it matches no query, and a query of
    no direction matches no chunk; hybrid still has its words."""
    calls_before = LLMCall.objects.filter(execution__owner=alice).count()

    by_meaning = search(lexical, query="kettles boil", mode="vector", k=5)
    fused = search(lexical, query="kettles boil", k=5)
    no_word = search(lexical, query="???", mode="vector", k=5)
    no_word_fused = search(lexical, query="??? kettles", k=5)

    assert [hit["title"] for hit in by_meaning] == [hit["title"] for hit in fused] == ["Kettle"]
    assert 0 < by_meaning[0]["score"] <= 1 and set(fused[0]["scores"]) == {"vector", "keyword"}
    assert no_word == []
    assert [hit["title"] for hit in no_word_fused] == ["Kettle"]
    assert LLMCall.objects.filter(execution__owner=alice).count() == calls_before + 4  # every query embedded


def test_a_long_query_is_searched_by_its_30_longest_words_wherever_they_stand(alice):
    """A keyword search looks for at most 30 distinct words of the query (its cost), the longest: the word that
    tells the documents apart may come last in a long question, and a query's shortest words are dropped first."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")
    collection = api.post("/api/v1/collections/", {"name": "manuals", "embedding_model": "local/local-embed-1"},
                          format="json").json()
    api.url = f"/api/v1/collections/{collection['id']}/search/"
    for title, text in (("Warranty", "Zephyrion warranty: heating element covered five years."),
                        ("Cart", "An ox pulls the cart.")):
        added = api.post(f"/api/v1/collections/{collection['id']}/documents/", {"title": title, "text": text},
                         format="json").json()
        assert added["status"] == "ready", added
    filler = [f"word{number:02d}" for number in range(34)]  # in no document, shorter than "zephyrion"
    query = " ".join([*filler, "ox", "Zephyrion?"])  # 36 distinct words, the one that matters last

    hits = search(api, query=query, k=5, mode="keyword")

    assert [hit["title"] for hit in hits] == ["Warranty"]  # "ox", among the six shortest, is not looked for
    assert {hit["title"] for hit in search(api, query="ox zephyrion", k=5, mode="keyword")} == {"Warranty", "Cart"}


def test_it_scores_words_by_the_collection_searched_alone_not_other_users_chunks(alice, bob):
    """A keyword score depends on the collection searched: bob's score for his document stays the same when alice
    adds private documents holding the word (on SQLite the one FTS5 index holds everyone's chunks)."""
    apis = {}
    for user in (alice, bob):
        apis[user] = APIClient()
        apis[user].credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=user, scopes=['knowledge']).key}")
    made = {user: apis[user].post("/api/v1/collections/", {"name": "notes", "embedding_model": "local/local-embed-1"},
                                  format="json").json()["id"] for user in (alice, bob)}
    bobs = apis[bob]
    bobs.url = f"/api/v1/collections/{made[bob]}/search/"
    for title, text in (("Valve", "The zqx valve must be checked."), ("Pump", "The pump hums at night.")):
        bobs.post(f"/api/v1/collections/{made[bob]}/documents/", {"title": title, "text": text}, format="json")
    before = search(bobs, query="zqx valve", mode="keyword")

    for index in range(20):
        apis[alice].post(f"/api/v1/collections/{made[alice]}/documents/",
                         {"title": f"Secret {index}", "text": f"Memo {index}: the zqx project is late."}, format="json")
    after = search(bobs, query="zqx valve", mode="keyword")

    assert [hit["title"] for hit in before] == ["Valve"] and before[0]["score"] > 0
    assert after == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's full-text search")
def test_b12_postgresql_ranks_the_stored_text_vector_among_its_first_matches(alice, monkeypatch):
    """The rank reads each chunk's stored text search vector, never parsing its text again (B12: over 100,000 chunks
    a word in 1,400 of them took 281 ms, 9 with the stored one), among at most PG_SCAN_ROWS matching chunks."""
    monkeypatch.setattr(knowledge_search, "PG_SCAN_ROWS", 3)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['knowledge']).key}")
    collection = api.post("/api/v1/collections/", {"name": "valves", "embedding_model": "local/local-embed-1"},
                          format="json").json()
    for number in range(6):
        added = api.post(f"/api/v1/collections/{collection['id']}/documents/",
                         {"title": f"Valve {number}", "text": f"valve part {number}"}, format="json").json()
        assert added["status"] == "ready", added
    api.url = f"/api/v1/collections/{collection['id']}/search/"

    with CaptureQueriesContext(connection) as queries:
        hits = search(api, query="valve", k=5, mode="keyword")

    assert len(hits) == 3 and all(hit["title"].startswith("Valve") for hit in hits)
    ranked = [query["sql"] for query in queries.captured_queries if "ts_rank_cd" in query["sql"]]
    assert len(ranked) == 1 and "to_tsvector" not in ranked[0] and '"text_search"' in ranked[0], ranked


def keyword_collection(user) -> tuple[APIClient, CollectionDocument]:
    """`user`'s API client, aimed at the search of a new collection, and a ready document of it with no chunk."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=user, scopes=['knowledge']).key}")
    collection = api.post("/api/v1/collections/", {"name": "parts", "embedding_model": "local/local-embed-1"},
                          format="json").json()
    api.url = f"/api/v1/collections/{collection['id']}/search/"
    return api, CollectionDocument.objects.create(collection_id=collection["id"], title="Parts", status="ready",
                                                  content_hash="parts")


def parts_text(number: int) -> str:
    """A chunk of 100 words drawn from 20,000, as B12's (its text search vector about 1.4 kB), "valve" in it 1 to 5
    times (a chunk's rank for "valve" grows with the count)."""
    words = random.Random(number)
    return " ".join(["valve"] * (number % 5 + 1) + [f"w{words.randrange(20000)}" for _ in range(100)])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's full-text search")
@pytest.mark.django_db(transaction=True)  # the chunks truncated after, not rolled back: no large table left behind
def test_b12_postgresql_ranks_the_same_first_matches_at_every_search_of_a_large_table(alice):
    """A word in more than PG_SCAN_ROWS chunks is ranked among its first PG_SCAN_ROWS in the table's order, the same
    at every search. On a table larger than a quarter of shared_buffers PostgreSQL starts a sequential scan where the
    last one stopped (synchronize_seqscans): the same search ranked other chunks each time."""
    api, document = keyword_collection(alice)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::bigint * 8192 / 4 FROM pg_settings WHERE name = 'shared_buffers'")
        synchronized_from = cursor.fetchone()[0]
        ids: list[int] = []
        size = 0
        while size <= synchronized_from:
            # Vectors of a size no index holds: written without an index's work (this search is by words).
            ids += [chunk.pk for chunk in chunks_create(texts=[parts_text(len(ids) + i) for i in range(2000)],
                                                        embeddings=[[1.0] * 8] * 2000, document=document)]
            cursor.execute("SELECT pg_relation_size('knowledge_chunk')")
            size = cursor.fetchone()[0]
        cursor.execute("ANALYZE knowledge_chunk")  # as autovacuum would: "valve" is known to be in every chunk
        # The table's order is where each row was written, not its id: a row fills the space a vacuum freed (of rows
        # earlier tests rolled back) before the table's end.
        cursor.execute("SELECT id FROM knowledge_chunk ORDER BY ctid LIMIT %s", [knowledge_search.PG_SCAN_ROWS])
        scanned = [row[0] for row in cursor.fetchall()]
    number = {pk: index for index, pk in enumerate(ids)}

    first = search(api, query="valve", k=5, mode="keyword")
    again = search(api, query="valve", k=5, mode="keyword")

    # The first chunks with "valve" five times, among the first PG_SCAN_ROWS in the table's order (ties by id).
    assert [hit["chunk_id"] for hit in first] == sorted(pk for pk in scanned if number[pk] % 5 == 4)[:5], first
    assert again == first


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's full-text search")
def test_b12_postgresql_plans_each_keyword_search_for_its_words(alice):
    """psycopg prepares a statement its connection has run 5 times, and PostgreSQL may then keep one plan for any
    words (a generic plan, which cannot tell a common word from a rare one: over 100,000 chunks it read a common
    word's every match through the index, 12-15 ms, where the plan for that word read 3-5). Each keyword search is
    planned for its own words, even on a connection whose statements take the generic plan."""
    api, document = keyword_collection(alice)
    chunks_create(texts=[parts_text(number) for number in range(200)], embeddings=[[1.0] * 8] * 200,
                  document=document)
    with connection.cursor() as cursor:  # what PostgreSQL chooses by itself once the generic plan looks no dearer
        cursor.execute("SET plan_cache_mode = force_generic_plan")  # (undone with the test's transaction)

    for number in range(12):
        assert search(api, query=("valve", "w13 w9861", "w7161")[number % 3], k=5, mode="keyword")

    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
                       ["%ts_rank_cd%"])
        plans = cursor.fetchall()
    assert plans and all(generic == 0 for generic, _ in plans), plans


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's storage of the text search vector")
def test_b12_postgresql_ranks_a_chunk_from_its_row_alone(alice):
    """A chunk's text search vector is kept in its row (migration 0009), where PostgreSQL moved it out to TOAST (a
    row over 2 kB: its text, its vector of 384 floats and its text search vector): each chunk ranked then read three
    pages more (over 100,000 chunks, 1,000 ranked took 7 to 17 ms, 2 to 3 from the rows)."""
    api, document = keyword_collection(alice)
    chunks_create(texts=[parts_text(number) for number in range(40)], embeddings=[[0.05] * 384] * 40,
                  document=document)
    statements = []

    def kept(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(kept):
        assert len(search(api, query="valve", k=5, mode="keyword")) == 5
    sql, params = next((sql, params) for sql, params in statements if "ts_rank_cd" in sql)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0][0]["Plan"]

    assert plan["Actual Rows"] == 5
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < 40, plan  # fewer pages than chunks ranked
