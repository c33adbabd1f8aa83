"""A collection searched: by meaning (cosine distance of the query's embedding: pgvector, sqlite-vec), by words
(PostgreSQL full-text search, SQLite FTS5 with BM25 over the collection's own statistics: knowledge.keyword_search),
or both fused by reciprocal rank (the default).

The query's embedding is an LLM call of the searcher's, counted and held to budgets like every one
(gateway.embeddings). Scores: `vector` is the cosine similarity (1 - distance), `keyword` the text rank
(PostgreSQL's ts_rank_cd, of the chunk and the query alone; on SQLite BM25 whose word frequencies and lengths are
the collection's, never the whole index's, which holds every user's chunks: higher is better), `hybrid` the sum
of 1 / (60 + rank) over the two rankings. `score_threshold` drops results scored below it, in the mode's own score.

A search that names a rerank model (any model with a rerank API: a provider's `/rerank`, Cohere's and Jina's shape,
which llama.cpp's server speaks) sends the best `rerank_depth(k)` chunks of its mode to it and keeps the `k` it
scores most relevant: their score is then its relevance score (`scores["rerank"]`), which the threshold reads. Each
rerank is an LLM call of kind `rerank` (gateway.rerank; in a run, the run's own), counted like an embedding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import BooleanField, FloatField, QuerySet
from django.db.models.expressions import RawSQL

from core.containment import rows_containing
from core.errors import InvalidInput, NotFound
from engine.hooks import Embed, Rerank
from engine.reranking import RERANK_PROVIDERS
from gateway.embeddings import embeddings_create
from gateway.rerank import rerank_create
from gateway.services import gateway_model
from knowledge.keyword_search import bm25_ranked
from knowledge.models import Chunk, Collection
from knowledge.selectors import chunk_distances_nearest
from knowledge.vector_index import rescore_candidates

MODES = ("hybrid", "vector", "keyword")
RRF_K = 60  # reciprocal rank fusion's constant, as its authors (and most search engines) use it
MAX_K = 100
_WORD = re.compile(r"\w+")
MAX_QUERY_WORDS = 30  # the most distinct words of a query a keyword search looks for (keyword_ids_ranked)
_FILTER_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")

_PG_QUERY = "to_tsquery('english'::regconfig, %s)"
PG_SCAN_ROWS = 1000  # how many matching chunks PostgreSQL ranks at most (B12 in bench/RESULTS.md)
# The chunk's to_tsvector('english', text), stored in its row and indexed (migrations 0008, 0009): ranked without
# parsing the text.
_PG_VECTOR = '"knowledge_chunk"."text_search"'
# For the ranking statement alone (SET LOCAL's effect: a pooled connection keeps its defaults). Planned for its words
# each time: psycopg prepares a statement a connection has run 5 times, and PostgreSQL may then keep one generic plan,
# which cannot tell a common word from a rare one (a common word's every match read through the index: over 100,000
# chunks 12-15 ms, where its own plan reads the table's first rows, 3-5). A sequential scan read from the table's
# start, as a bitmap scan reads its matches: a scan of a large table starts where the last one stopped
# (`synchronize_seqscans`), and the same search ranked other chunks each time.
_PG_KEYWORD_SETTINGS = ("SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
                        "set_config('synchronize_seqscans', 'off', true)")


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float
    scores: dict  # the chunk's score in each ranking it was found by


def _filtered(collection: Collection, filters: dict | None) -> QuerySet[Chunk]:
    """The collection's chunks whose document's metadata has each of `filters`' key: value pairs."""
    # A hit is read for its text and its document's title, never its vector (not parsed: a 384-dimension one, about
    # 0.2 ms) nor its document's whole text or file (a document's every hit would read them again).
    chunks = Chunk.objects.filter(collection=collection).select_related("document").defer(
        "embedding", "document__text", "document__file_data")
    for key, value in (filters or {}).items():
        if not _FILTER_KEY.match(str(key)) or not isinstance(value, (str, int, float, bool)) or value is None:
            raise InvalidInput("filters match a document's metadata: keys of letters, digits and _, scalar values",
                               details=[{"path": f"filters.{key}", "code": "invalid_filter",
                                         "message": "a metadata key and a string, number or boolean"}])
    # The filter's keys are data, never ORM lookups (`contains`, `a__b`): JSON containment, as /langgraph/'s.
    return rows_containing(chunks, field="document__metadata", pattern=filters)


def keyword_ids_ranked(*, collection: Collection, query: str, limit: int,
                       filters: dict | None = None) -> list[tuple[int, float]]:
    """The ids of the chunks of `collection` (of documents whose metadata matches `filters`) that contain any word of
    `query` (its MAX_QUERY_WORDS longest distinct words), best first, with their rank."""
    # At most MAX_QUERY_WORDS (the cap bounds the search's cost): the longest, ties in the query's order (sorted() is
    # stable), being the likeliest to tell documents apart ("zephyrion", not "it"), wherever they stand in the query.
    distinct = list(dict.fromkeys(word.lower() for word in _WORD.findall(query)))
    words = sorted(distinct, key=len, reverse=True)[:MAX_QUERY_WORDS]
    if not words:
        return []
    chunks = _filtered(collection, filters)
    if connection.vendor == "postgresql":
        terms = " | ".join(words)
        found = chunks.alias(matched=RawSQL(f"{_PG_VECTOR} @@ {_PG_QUERY}", [terms], output_field=BooleanField()))
        found = found.filter(matched=True).annotate(
            rank=RawSQL(f"ts_rank_cd({_PG_VECTOR}, {_PG_QUERY})", [terms], output_field=FloatField()))
        # Ranked among the first PG_SCAN_ROWS matching chunks in the table's order (a word in more of them: its first).
        try:
            sql, params = found.values_list("id", "rank")[:PG_SCAN_ROWS].query.sql_with_params()
        except EmptyResultSet:  # a filter no chunk can match
            return []
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_PG_KEYWORD_SETTINGS)
            cursor.execute(f"SELECT id, rank FROM ({sql}) AS matched ORDER BY rank DESC, id LIMIT %s",  # noqa: S608
                           [*params, limit])
            return cursor.fetchall()
    within = None
    if filters:  # the matching chunks ranked, by the collection's statistics
        try:
            within = chunks.values("id").query.sql_with_params()
        except EmptyResultSet:  # a filter no chunk can match
            return []
    return bm25_ranked(collection_id=collection.pk.hex, words=words, limit=limit, within=within)


def _query_vector(*, collection: Collection, user, query: str, api_key, embed: Embed | None) -> list[float]:
    if embed is not None:  # a run's search: the run embeds it, an LLM call of its own node
        return embed(collection.embedding_model, [query])[0]
    return embeddings_create(owner=user, model=collection.embedding_model, texts=[query], api_key=api_key,
                             purpose={"query": query[:500], "collection": str(collection.pk)}).vectors[0]


def rerank_depth(k: int) -> int:
    """How many chunks a search sends to be reranked, to keep `k`."""
    return min(max(4 * k, 20), MAX_K)


def rerank_model_resolved(asked: str) -> str:
    """`provider/model` of a rerank model as a search names it; a 400 on `rerank_model` when it cannot be called or
    its provider has no rerank API."""
    try:
        provider, model, _ = gateway_model(asked)
    except NotFound as unknown:
        raise InvalidInput(unknown.message, details=[
            {"path": "rerank_model", "code": "unknown_model", "message": f"{asked} cannot be called"}]) from None
    if provider not in RERANK_PROVIDERS:
        raise InvalidInput(f"provider {provider!r} has no rerank API (providers with one: "
                           f"{', '.join(RERANK_PROVIDERS)})", details=[{"path": "rerank_model", "code": "no_rerank",
                                                                       "message": f"{provider} has no rerank API"}])
    return f"{provider}/{model}"


def hits_reranked(*, hits: list[Hit], query: str, model: str, k: int, user, api_key=None, rerank: Rerank | None = None,
                  purpose: dict | None = None) -> list[Hit]:
    """The `k` of `hits` that `model` (`provider/model`) finds most relevant to `query`, most relevant first, scored
    by it: `user`'s LLM call of kind `rerank`, through `rerank` in a run, else a run of its own (gateway.rerank). No
    hits, no call."""
    if not hits:
        return []
    texts = [hit.chunk.text for hit in hits]
    if rerank is not None:
        scores = rerank(model, query, texts, min(k, len(texts)))
    else:
        scores = rerank_create(owner=user, model=model, query=query, documents=texts, top_n=min(k, len(texts)),
                               api_key=api_key, purpose=purpose).scores
    return [Hit(hits[index].chunk, score, {**hits[index].scores, "rerank": score}) for index, score in scores]


def collection_search(*, collection: Collection, user, query: str, k: int = 5, mode: str = "hybrid",
                      score_threshold: float | None = None, filters: dict | None = None,
                      rerank_model: str | None = None, api_key=None, embed: Embed | None = None,
                      rerank: Rerank | None = None) -> list[Hit]:
    """The `k` chunks of `collection` that best answer `query` in `mode`, best first (ties by id), scored as the
    module says; only chunks of documents whose metadata matches `filters`; reranked by `rerank_model` when one
    is named. The query's embedding (vector and hybrid modes) and the rerank are `user`'s LLM calls: through
    `embed` ((`provider/model`, texts) -> vectors) and `rerank` in a run, which records them, else runs of their
    own (gateway.embeddings, gateway.rerank)."""
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}", details=[
            {"path": "mode", "code": "invalid_choice", "message": f"one of {', '.join(MODES)}"}])
    if not query.strip():
        raise InvalidInput("a search needs a query", details=[
            {"path": "query", "code": "blank", "message": "the query is empty"}])
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be from 1 to {MAX_K}", details=[
            {"path": "k", "code": "out_of_range", "message": f"1 to {MAX_K}"}])
    chunks = _filtered(collection, filters)
    # Resolved before anything is embedded: a model that cannot be called costs the searcher nothing.
    rerank_model = rerank_model_resolved(rerank_model) if rerank_model else None
    wanted = rerank_depth(k) if rerank_model else k
    depth = wanted if mode != "hybrid" else max(4 * wanted, 40)
    # The vector side of a hybrid search fuses fewer, from the candidates a search of `wanted` re-scores: the index's
    # nearest search slows with the number asked (sqlite-vec's, over 100,000 chunks: 200 candidates about 40 ms,
    # 50 about 12; B12 in bench/RESULTS.md). Its first `wanted` are a vector search's own.
    vector_depth = wanted if mode != "hybrid" else max(2 * wanted, 20)
    # Each side ranks chunk ids; the chunks kept are read once, in one query.
    rankings: dict[str, list[tuple[int, float]]] = {}
    if mode in ("vector", "hybrid"):
        vector = _query_vector(collection=collection, user=user, query=query, api_key=api_key, embed=embed)
        rankings["vector"] = [(chunk_id, 1.0 - distance) for chunk_id, distance in chunk_distances_nearest(
            vector=vector, k=vector_depth, chunks=chunks, candidates=rescore_candidates(wanted))]
    if mode in ("keyword", "hybrid"):
        rankings["keyword"] = keyword_ids_ranked(collection=collection, query=query, limit=depth, filters=filters)
    if mode != "hybrid":
        ranked = [(chunk_id, score, {mode: score}) for chunk_id, score in rankings[mode]]
    else:
        fused: dict[int, tuple[float, dict]] = {}
        for name, ranking in rankings.items():
            for rank, (chunk_id, score) in enumerate(ranking, start=1):
                total, scores = fused.get(chunk_id, (0.0, {}))
                fused[chunk_id] = (total + 1.0 / (RRF_K + rank), {**scores, name: score})
        ranked = sorted(((chunk_id, total, scores) for chunk_id, (total, scores) in fused.items()),
                        key=lambda row: (-row[1], row[0]))
    ranked = ranked[:wanted]
    found = chunks.in_bulk([chunk_id for chunk_id, _, _ in ranked])  # a chunk deleted meanwhile is left out
    hits = [Hit(found[chunk_id], score, scores) for chunk_id, score, scores in ranked if chunk_id in found]
    if rerank_model:
        hits = hits_reranked(hits=hits[:wanted], query=query, model=rerank_model, k=k, user=user, api_key=api_key,
                             rerank=rerank, purpose={"query": query[:500], "collection": str(collection.pk)})
    if score_threshold is not None:
        hits = [hit for hit in hits if hit.score >= score_threshold]
    return hits[:k]
