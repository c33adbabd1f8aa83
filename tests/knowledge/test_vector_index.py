"""The chunks' ANN indexes (issue 45, vector search on both databases): HNSW with cosine distance on PostgreSQL,
a sqlite-vec table of bits kept in step with the chunk rows on SQLite, re-scored exactly. Real pgvector and
sqlite-vec (make test runs this file on each)."""
import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from knowledge.models import Chunk
from knowledge.selectors import chunks_nearest
from knowledge.services import chunks_create
from knowledge.vector_index import chunks_nearest_indexed, vector_index_exists, vector_indexes_ensure

pytestmark = pytest.mark.django_db


def clustered(rng, count: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors around `centres`, as texts on a few topics embed (a query's nearest are clearly nearer)."""
    points = centres[rng.integers(0, len(centres), count)] + rng.standard_normal((count, 384)) / np.sqrt(384)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def bits_rows() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT rowid FROM knowledge_chunk_bits_384")
        return {row[0] for row in cursor.fetchall()}


def test_issue_45_every_model_dimension_has_its_index():
    for dimensions in (256, 384, 1536):
        assert vector_index_exists(dimensions=dimensions)
    assert not vector_index_exists(dimensions=3)


def test_issue_45_search_through_the_index_finds_what_exact_search_finds():
    rng = np.random.default_rng(45)
    vectors = clustered(rng, 600, rng.standard_normal((12, 384)))
    chunks = chunks_create(texts=[f"chunk {i}" for i in range(len(vectors))], embeddings=vectors.tolist())
    found_total = 0
    for query in clustered(rng, 10, vectors[rng.integers(0, len(vectors), 10)]):
        expected = {chunks[i].pk for i in np.argsort(-(vectors @ query))[:10]}
        found = chunks_nearest(vector=query.tolist(), k=10)
        assert [chunk.distance for chunk in found] == sorted(chunk.distance for chunk in found)
        assert found[0].distance == pytest.approx(1 - float(np.max(vectors @ query)), abs=1e-5)
        found_total += len(expected & {chunk.pk for chunk in found})
    assert found_total / 100 >= 0.95


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's HNSW index")
def test_issue_45_postgresql_answers_a_search_from_the_hnsw_index_of_its_dimension():
    rng = np.random.default_rng(7)
    chunks_create(texts=["a", "b", "c"], embeddings=rng.standard_normal((3, 384)).tolist())
    chunks_create(texts=["d"], embeddings=[[1.0, 0.0, 0.0]])
    with CaptureQueriesContext(connection) as queries:
        chunks_nearest(vector=rng.standard_normal(384).tolist(), k=2)
    search = next(query["sql"] for query in queries.captured_queries if "<=>" in query["sql"])
    with connection.cursor() as cursor:
        for method in ("seqscan", "bitmapscan", "sort"):  # four rows: only cost would prefer another plan
            cursor.execute(f"SET LOCAL enable_{method} = off")
        cursor.execute("EXPLAIN " + search)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using knowledge_chunk_hnsw_384" in plan, plan


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's vec0 table")
def test_issue_45_sqlite_keeps_the_bits_table_in_step_and_searches_it():
    rng = np.random.default_rng(8)
    chunks = chunks_create(texts=["a", "b", "c"], embeddings=rng.standard_normal((3, 384)).tolist())
    chunks_create(texts=["small"], embeddings=[[1.0, 0.0, 0.0]])
    assert bits_rows() == {chunk.pk for chunk in chunks}

    Chunk.objects.filter(pk=chunks[0].pk).update(embedding=[1.0] * 8, dimensions=8)
    Chunk.objects.filter(pk=chunks[1].pk).delete()
    assert bits_rows() == {chunks[2].pk}
    Chunk.objects.filter(pk=chunks[0].pk).update(embedding=chunks[2].embedding, dimensions=384)
    assert bits_rows() == {chunks[0].pk, chunks[2].pk}

    # The search reads the index: a chunk missing from it is not found; vector_indexes_ensure puts it back.
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER knowledge_chunk_bits_384_insert")
    query = rng.standard_normal(384).tolist()
    (late,) = chunks_create(texts=["late"], embeddings=[query])
    assert [chunk.pk for chunk in chunks_nearest(vector=query, k=1)] != [late.pk]
    assert [chunk.pk for chunk in chunks_nearest(vector=query, k=1, exact=True)] == [late.pk]
    vector_indexes_ensure()
    assert bits_rows() == {chunks[0].pk, chunks[2].pk, late.pk}
    assert [chunk.pk for chunk in chunks_nearest(vector=query, k=1)] == [late.pk]
    (after,) = chunks_create(texts=["after"], embeddings=[query])
    assert bits_rows() == {chunks[0].pk, chunks[2].pk, late.pk, after.pk}


def test_issue_45_a_search_among_some_chunks_finds_their_nearest_not_fewer():
    rng = np.random.default_rng(9)
    vectors = clustered(rng, 300, rng.standard_normal((5, 384)))
    chunks = chunks_create(texts=[f"chunk {i}" for i in range(len(vectors))], embeddings=vectors.tolist())
    some = [chunk.pk for chunk in chunks[::25]]  # 12 chunks scattered among the 300
    found = chunks_nearest_indexed(vector=vectors[0].tolist(), k=5, chunks=Chunk.objects.filter(pk__in=some))
    by_pk = {chunk.pk: i for i, chunk in enumerate(chunks)}
    expected = sorted(some, key=lambda pk: -float(vectors[by_pk[pk]] @ vectors[0]))[:5]
    assert [chunk.pk for chunk in found] == expected


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's vec_distance_cosine")
def test_issue_45_sqlite_reads_the_query_vector_once_per_search_not_once_per_chunk():
    chunks_create(texts=["a", "b"], embeddings=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with CaptureQueriesContext(connection) as queries:
        found = chunks_nearest(vector=[1.0, 0.1, 0.0], k=2)
    assert [chunk.text for chunk in found] == ["a", "b"]
    (search,) = [query["sql"] for query in queries.captured_queries if "vec_distance_cosine" in query["sql"]]
    assert 'vec_distance_cosine("knowledge_chunk"."embedding", vec_f32(' in search, search


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's vec0 table")
def test_a_search_among_chunks_that_are_all_the_index_nearest_asks_the_index_once():
    """The index's nearest candidates all among the chunks searched (a collection that is most of the index): they
    are the searched chunks' nearest, found without reading the searched chunks into the KNN; else the KNN again
    within them (the test above)."""
    rng = np.random.default_rng(11)
    vectors = clustered(rng, 300, rng.standard_normal((5, 384)))
    chunks = chunks_create(texts=[f"chunk {i}" for i in range(len(vectors))], embeddings=vectors.tolist())
    searched = Chunk.objects.exclude(pk=chunks[-1].pk)

    with CaptureQueriesContext(connection) as queries:
        found = chunks_nearest_indexed(vector=vectors[0].tolist(), k=5, chunks=searched)

    unfiltered = chunks_nearest_indexed(vector=vectors[0].tolist(), k=5)
    assert chunks[-1].pk not in [chunk.pk for chunk in unfiltered]  # the chunk left out is not among them
    assert [chunk.pk for chunk in found] == [chunk.pk for chunk in unfiltered]
    knn = [query["sql"] for query in queries.captured_queries if "MATCH vec_quantize_binary" in query["sql"]]
    assert len(knn) == 1 and "rowid IN" not in knn[0], knn
