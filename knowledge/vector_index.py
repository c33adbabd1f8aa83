"""Approximate nearest-neighbour indexes of the chunks' vectors, one per dimension, on both databases, and the
search that uses them: an HNSW index on `embedding::vector(d)` partial on `dimensions = d` (PostgreSQL), a `vec0`
table of the vectors' bits kept in step by triggers, its candidates re-scored by exact cosine (SQLite). A dimension
with no index is searched exactly. Why each, and the figures: docs/knowledge.md#databases (B12 in bench/RESULTS.md).
"""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import QuerySet
from django.db.models.functions import Cast

from knowledge.models import Chunk
from knowledge.vectors import CosineDistance, EmbeddingField, float32_blob

# The local lexical provider's (engine/embeddings_local.py), all-MiniLM-L6-v2's, OpenAI
# text-embedding-3-small's. pgvector's HNSW takes `vector` of at most 2,000 dimensions.
INDEXED_DIMENSIONS = (256, 384, 1536)
HNSW_MAX_DIMENSIONS = 2000
# SQLite: how many candidates the bit index gives for exact re-scoring: RESCORE_FACTOR per result, at least
# RESCORE_MIN. sqlite-vec 0.1.9's KNN slows steeply with its k (over 100,000 vectors here: k=10 a few ms, k=50
# and k=100 tens to a hundred), while 50 candidates found 0.97 of exact search's 10 nearest in B12's data.
RESCORE_FACTOR = 5
RESCORE_MIN = 50
SQLITE_VEC_MAX_K = 4096  # sqlite-vec's largest `k`
# Cosine distances lie in [0, 2] (float error aside). A vector of no direction (all zeros: a text with no word, for
# the lexical model) has none: sqlite-vec answers NULL, pgvector NaN, and neither is at most this, so it matches none.
COSINE_DISTANCE_MAX = 2.0 + 1e-6

# m=32, ef_construction=128 (pgvector's defaults are 16 and 64): over 20,000 clustered vectors (B12's kind) the
# defaults found 0.98 of exact search's 10 nearest at ef_search 100, these 0.998; over 100,000 the defaults 0.87.
PG_HNSW_CREATE = ("CREATE INDEX IF NOT EXISTS knowledge_chunk_hnsw_{d} ON knowledge_chunk USING hnsw "
                  "((embedding::vector({d})) vector_cosine_ops) WITH (m = 32, ef_construction = 128) "
                  "WHERE dimensions = {d}")
PG_HNSW_DROP = "DROP INDEX IF EXISTS knowledge_chunk_hnsw_{d}"
PG_HNSW_EXISTS = "SELECT 1 FROM pg_indexes WHERE tablename = 'knowledge_chunk' AND indexname = %s"
PG_EF_SEARCH_SET = "SET LOCAL hnsw.ef_search = {ef}"

SQLITE_VEC_CREATE = "CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_bits_{d} USING vec0(embedding bit[{d}])"
SQLITE_VEC_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS knowledge_chunk_bits_{d}_insert AFTER INSERT ON knowledge_chunk "
    "WHEN NEW.dimensions = {d} BEGIN "
    "INSERT INTO knowledge_chunk_bits_{d}(rowid, embedding) VALUES (NEW.id, vec_quantize_binary(NEW.embedding)); END",
    # Two update triggers whose conditions exclude each other, so their order does not matter. The insert is
    # INSERT ... VALUES: through INSERT ... SELECT the quantised value loses the subtype that marks it as bits.
    "CREATE TRIGGER IF NOT EXISTS knowledge_chunk_bits_{d}_update AFTER UPDATE OF id, dimensions, embedding "
    "ON knowledge_chunk WHEN NEW.dimensions = {d} BEGIN "
    "DELETE FROM knowledge_chunk_bits_{d} WHERE rowid = OLD.id; "
    "INSERT INTO knowledge_chunk_bits_{d}(rowid, embedding) VALUES (NEW.id, vec_quantize_binary(NEW.embedding)); END",
    "CREATE TRIGGER IF NOT EXISTS knowledge_chunk_bits_{d}_resize AFTER UPDATE OF id, dimensions, embedding "
    "ON knowledge_chunk WHEN OLD.dimensions = {d} AND NEW.dimensions <> {d} BEGIN "
    "DELETE FROM knowledge_chunk_bits_{d} WHERE rowid = OLD.id; END",
    "CREATE TRIGGER IF NOT EXISTS knowledge_chunk_bits_{d}_delete AFTER DELETE ON knowledge_chunk "
    "WHEN OLD.dimensions = {d} BEGIN DELETE FROM knowledge_chunk_bits_{d} WHERE rowid = OLD.id; END",
)
# Chunks a rebuilt table's missing triggers let through (inserted one by one, VALUES keeping the bits' subtype),
# and rows of chunks gone meanwhile.
SQLITE_VEC_MISSING = ("SELECT id, embedding FROM knowledge_chunk WHERE dimensions = {d} "
                      "AND id NOT IN (SELECT rowid FROM knowledge_chunk_bits_{d})")
SQLITE_VEC_INSERT = "INSERT INTO knowledge_chunk_bits_{d}(rowid, embedding) VALUES (%s, vec_quantize_binary(%s))"
SQLITE_VEC_PRUNE = ("DELETE FROM knowledge_chunk_bits_{d} WHERE rowid NOT IN "
                    "(SELECT id FROM knowledge_chunk WHERE dimensions = {d})")
SQLITE_VEC_DROP = ("DROP TRIGGER IF EXISTS knowledge_chunk_bits_{d}_insert",
                   "DROP TRIGGER IF EXISTS knowledge_chunk_bits_{d}_update",
                   "DROP TRIGGER IF EXISTS knowledge_chunk_bits_{d}_resize",
                   "DROP TRIGGER IF EXISTS knowledge_chunk_bits_{d}_delete",
                   "DROP TABLE IF EXISTS knowledge_chunk_bits_{d}")
SQLITE_VEC_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s"
SQLITE_VEC_INDEXED = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'knowledge_chunk_bits_%'"
# KNN over the bits; `rowid IN (...)` keeps to the chunks searched (sqlite-vec filters before it ranks).
SQLITE_VEC_CANDIDATES = ("SELECT rowid FROM knowledge_chunk_bits_{d} "
                         "WHERE embedding MATCH vec_quantize_binary(%s) AND k = %s")
SQLITE_VEC_CANDIDATES_WITHIN = SQLITE_VEC_CANDIDATES + " AND rowid IN ({within})"


def _dimensions_checked(dimensions: int) -> int:
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions <= 0:
        raise ValueError(f"dimensions must be a positive integer, got {dimensions!r}")
    if dimensions % 8:  # a vec0 bit column holds whole bytes
        raise ValueError(f"vectors of {dimensions} dimensions cannot be indexed (a multiple of 8 can)")
    return dimensions


def vector_index_create(*, dimensions: int, using=None) -> None:
    """An index of the chunks of `dimensions` (idempotent). On SQLite its `vec0` table is filled with the chunks
    there are; on PostgreSQL the index is built from them (a lock on the table's writes while it builds)."""
    conn = using or connection
    d = _dimensions_checked(dimensions)
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            if d > HNSW_MAX_DIMENSIONS:
                raise ValueError(f"pgvector's HNSW indexes vectors of at most {HNSW_MAX_DIMENSIONS} dimensions")
            cursor.execute(PG_HNSW_CREATE.format(d=d))
        elif conn.vendor == "sqlite":
            cursor.execute(SQLITE_VEC_CREATE.format(d=d))
            for statement in SQLITE_VEC_TRIGGERS:
                cursor.execute(statement.format(d=d))
            cursor.execute(SQLITE_VEC_PRUNE.format(d=d))
            cursor.execute(SQLITE_VEC_MISSING.format(d=d))
            missing = cursor.fetchall()
            if missing:
                cursor.executemany(SQLITE_VEC_INSERT.format(d=d), missing)


def vector_index_drop(*, dimensions: int, using=None) -> None:
    conn = using or connection
    d = _dimensions_checked(dimensions)
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute(PG_HNSW_DROP.format(d=d))
        elif conn.vendor == "sqlite":
            for statement in SQLITE_VEC_DROP:
                cursor.execute(statement.format(d=d))


def vector_indexes_ensure(*, using=None) -> None:
    """On SQLite, every `vec0` table's triggers back and its rows in step with the chunks (after a migration
    rebuilt the chunk table). PostgreSQL's indexes outlive such changes: nothing to do."""
    conn = using or connection
    if conn.vendor != "sqlite":
        return
    with conn.cursor() as cursor:
        cursor.execute(SQLITE_VEC_INDEXED)
        names = [name for (name,) in cursor.fetchall()]
    for name in names:
        suffix = name.removeprefix("knowledge_chunk_bits_")
        if suffix.isdigit():
            vector_index_create(dimensions=int(suffix), using=conn)


def vector_index_exists(*, dimensions: int) -> bool:
    if connection.vendor == "postgresql":
        sql, name = PG_HNSW_EXISTS, f"knowledge_chunk_hnsw_{dimensions}"
    elif connection.vendor == "sqlite":
        sql, name = SQLITE_VEC_EXISTS, f"knowledge_chunk_bits_{dimensions}"
    else:
        return False
    with connection.cursor() as cursor:
        cursor.execute(sql, [name])
        return cursor.fetchone() is not None


def rescore_candidates(k: int) -> int:
    """How many of the SQLite bit index's nearest a search of `k` re-scores exactly."""
    return min(max(RESCORE_MIN, RESCORE_FACTOR * k), SQLITE_VEC_MAX_K)


def chunks_nearest_indexed(*, vector: list[float], k: int, chunks: QuerySet[Chunk] | None = None,
                           exact: bool = False, candidates: int | None = None) -> list[Chunk]:
    """The `k` chunks of the vector's size nearest to it by cosine distance (each with `distance`), nearest first,
    among `chunks` (all when None): `chunk_distances_nearest`'s, read in one query."""
    nearest = chunk_distances_nearest(vector=vector, k=k, chunks=chunks, exact=exact, candidates=candidates)
    found = (Chunk.objects.all() if chunks is None else chunks).in_bulk([chunk_id for chunk_id, _ in nearest])
    for chunk_id, distance in nearest:
        if chunk_id in found:  # (a chunk deleted between the two reads is left out)
            found[chunk_id].distance = distance
    return [found[chunk_id] for chunk_id, _ in nearest if chunk_id in found]


def chunk_distances_nearest(*, vector: list[float], k: int, chunks: QuerySet[Chunk] | None = None,
                            exact: bool = False, candidates: int | None = None) -> list[tuple[int, float]]:
    """The ids of the `k` chunks of the vector's size nearest to it by cosine distance, with that distance, nearest
    first, among `chunks` (all when None), through the dimension's index when it has one (approximate: see the
    module's docstring), by comparing every chunk when it has none or `exact` (ties by id). A vector of no direction
    (all zeros) is near nothing: as a query it finds none, as a chunk it is never found."""
    d = len(vector)
    vector = [float(x) for x in vector]
    among = (Chunk.objects.all() if chunks is None else chunks).filter(dimensions=d)
    if k <= 0 or not any(vector):  # a query of no direction is near nothing
        return []
    found = None if exact else _nearest_through_index(among, vector, k, filtered=chunks is not None,
                                                       candidates=max(candidates or rescore_candidates(k), k))
    # An index answers fewer than k when the chunks searched are few or its nearest candidates are not among them
    # (other collections' chunks, rows deleted and not yet vacuumed): those are found by comparing every one.
    if found is None or len(found) < k:
        found = list(among.annotate(distance=CosineDistance("embedding", vector))
                     .filter(distance__lte=COSINE_DISTANCE_MAX).order_by("distance", "id")
                     .values_list("id", "distance")[:k])
    return found


def _nearest_through_index(among: QuerySet[Chunk], vector: list[float], k: int, *, filtered: bool,
                           candidates: int) -> list[tuple[int, float]] | None:
    """The index's answer, None when the vector's dimension has no index here."""
    d = len(vector)
    if connection.vendor == "postgresql" and d <= HNSW_MAX_DIMENSIONS:
        # Without an index for `d` the same query compares every chunk of that size: exact, slower.
        with transaction.atomic(), connection.cursor() as cursor:
            # SET LOCAL: for this transaction only, so a pooled connection keeps its default.
            cursor.execute(PG_EF_SEARCH_SET.format(ef=max(int(settings.CHATTER_KNOWLEDGE_HNSW_EF_SEARCH), k)))
            # Ordered by the indexed expression's distance alone: a second key would keep the planner off the index.
            return list(among.annotate(distance=CosineDistance(Cast("embedding", EmbeddingField(dimensions=d)), vector))
                        .filter(distance__lte=COSINE_DISTANCE_MAX).order_by("distance")
                        .values_list("id", "distance")[:k])
    if not (connection.vendor == "sqlite" and d % 8 == 0 and k <= SQLITE_VEC_MAX_K
            and vector_index_exists(dimensions=d)):
        return None
    candidates = min(candidates, SQLITE_VEC_MAX_K)
    query = float32_blob(vector)
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_VEC_CANDIDATES.format(d=d), [query, candidates])
        ids = [row[0] for row in cursor.fetchall()]
        # The candidates among the searched chunks, re-scored exactly in the same query (None: a vector of no
        # direction). The index's nearest are the searched chunks' nearest when every one of them is a searched
        # chunk (a collection that is most of the index): taken as they are, without reading which chunks are
        # searched into the KNN (at 100,000 chunks, about 50 ms). Else the KNN again, within them.
        rescored = list(among.filter(id__in=ids).annotate(distance=CosineDistance("embedding", vector))
                        .values_list("id", "distance"))
        if filtered and len(rescored) < len(ids):
            try:
                within_sql, within_params = among.values("id").query.sql_with_params()
            except EmptyResultSet:  # a filter no chunk can match (e.g. `id IN ()`): nothing to search
                return []
            cursor.execute(SQLITE_VEC_CANDIDATES_WITHIN.format(d=d, within=within_sql),
                           [query, candidates, *within_params])
            ids = [row[0] for row in cursor.fetchall()]
            rescored = list(among.filter(id__in=ids).annotate(distance=CosineDistance("embedding", vector))
                            .values_list("id", "distance"))
    kept = [(chunk_id, distance) for chunk_id, distance in rescored
            if distance is not None and distance <= COSINE_DISTANCE_MAX]
    return sorted(kept, key=lambda row: (row[1], row[0]))[:k]
