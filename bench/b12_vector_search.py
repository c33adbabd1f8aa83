"""B12: vector search over 100,000 chunks of 384 dimensions through the chunks' ANN indexes
(knowledge/vector_index.py): PostgreSQL/pgvector HNSW (target p95 ≤ 20 ms) and SQLite/sqlite-vec (≤ 50 ms),
recall@10 against exact search (≥ 0.95), and ingestion in chunks/s with all-MiniLM-L6-v2 in process.

    .venv/bin/python -m bench.b12_vector_search [--db both|sqlite|pg] [--chunks 100000] [--queries 200]
                                                [--data clustered|random] [--ef-search 40,100,200]

Each database is measured in a process of its own (a fresh, migrated database; PostgreSQL from
scripts/services.sh). The vectors: `clustered` (the default) are unit vectors around 2,000 topic centres, 50 chunks
a topic on average, a chunk's cosine to its topic's others about 0.5 and to the rest about 0 — as texts on many
topics embed with MiniLM, a query's nearest chunks clearly nearer than the rest; `random` are uniform unit vectors,
where every chunk is about as far as any other (no ANN index does well there; a stress figure, not the target).
The queries are new vectors of the same kind. The chunks are written with knowledge.services.chunks_create in
batches with the index dropped, then the index is built (its build time is reported); a search is the product's
own call, knowledge.selectors.chunks_nearest (the ORM, the index, and on SQLite the exact re-scoring), timed
from the call to its list of chunks; the query's embedding is not in it (measured apart: the MiniLM line).
Recall@10: the share of exact search's 10 nearest (numpy, every chunk compared) a search returns. Ingestion:
MiniLM embeds `--ingest` chunks of about 150 words and chunks_create writes them with the index in place.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from bench.machine import machine_note
from bench.processes import BenchRun, log, run_main
from bench.stats import median, percentile

DIMENSIONS = 384
TOPICS = 2000


def vectors_make(kind: str, count: int, rng: np.random.Generator, centres: np.ndarray | None) -> np.ndarray:
    if kind == "random":
        points = rng.standard_normal((count, DIMENSIONS))
    else:
        noise = rng.standard_normal((count, DIMENSIONS)) / np.sqrt(DIMENSIONS)
        points = centres[rng.integers(0, len(centres), count)] + noise
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def measure_one(args) -> dict:
    """In a process whose Django is set up on the database to measure."""
    from django.db import connection
    from django.test.utils import override_settings

    from knowledge.selectors import chunks_nearest
    from knowledge.services import chunks_create
    from knowledge.vector_index import vector_index_create, vector_index_drop

    rng = np.random.default_rng(12)
    centres = rng.standard_normal((TOPICS, DIMENSIONS)) if args.data == "clustered" else None
    vectors = vectors_make(args.data, args.chunks, rng, centres)
    queries = vectors_make(args.data, args.queries, rng, centres)
    result: dict = {"db": connection.vendor, "chunks": args.chunks, "data": args.data}

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # the whole graph in memory while it builds
            cursor.execute("SET maintenance_work_mem = '1GB'")
    vector_index_drop(dimensions=DIMENSIONS)
    started = time.perf_counter()
    ids: list[int] = []
    for begin in range(0, args.chunks, 2000):
        batch = vectors[begin:begin + 2000]
        ids += [c.pk for c in chunks_create(texts=[f"chunk {begin + i}" for i in range(len(batch))],
                                            embeddings=batch.tolist())]
    result["load_s"] = time.perf_counter() - started
    started = time.perf_counter()
    vector_index_create(dimensions=DIMENSIONS)
    result["index_build_s"] = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE knowledge_chunk")
    log(f"{connection.vendor}: {args.chunks:,} chunks loaded in {result['load_s']:.0f} s, "
        f"index built in {result['index_build_s']:.1f} s")

    position = {pk: i for i, pk in enumerate(ids)}
    exact = [set(np.argsort(-(vectors @ q))[:10].tolist()) for q in queries]

    def run(label: str) -> dict:
        for q in queries[:20]:  # warm-up: the index's pages in memory
            chunks_nearest(vector=q.tolist(), k=10)
        times, hits = [], 0
        for q, expected in zip(queries, exact):
            begun = time.perf_counter()
            found = chunks_nearest(vector=q.tolist(), k=10)
            times.append(time.perf_counter() - begun)
            hits += len(expected & {position[c.pk] for c in found})
        ms = [t * 1000 for t in times]
        figures = {"label": label, "p50_ms": median(ms), "p95_ms": percentile(ms, 95), "max_ms": max(ms),
                   "recall_at_10": hits / (10 * len(queries))}
        log(f"{connection.vendor} {label}: p50 {figures['p50_ms']:.1f} ms, p95 {figures['p95_ms']:.1f} ms, "
            f"recall@10 {figures['recall_at_10']:.3f}")
        return figures

    if connection.vendor == "postgresql":
        result["runs"] = []
        for ef in args.ef_search:
            with override_settings(CHATTER_KNOWLEDGE_HNSW_EF_SEARCH=ef):
                result["runs"].append(run(f"hnsw.ef_search={ef}"))
    else:
        result["runs"] = [run("bits + exact re-scoring")]
    exact_times = []
    for q in queries[:10]:
        begun = time.perf_counter()
        chunks_nearest(vector=q.tolist(), k=10, exact=True)
        exact_times.append((time.perf_counter() - begun) * 1000)
    result["exact_p50_ms"] = median(exact_times)

    # Ingestion with the model in process: embed, then write with the index in place.
    from bench.b12_minilm_throughput import chunk_texts
    from engine.embeddings_minilm import minilm_embed, minilm_load

    minilm_load()
    texts = chunk_texts(args.ingest, 150, seed=45)
    started = time.perf_counter()
    embedded, tokens = minilm_embed(texts)
    embed_s = time.perf_counter() - started
    started = time.perf_counter()
    chunks_create(texts=texts, embeddings=embedded)
    write_s = time.perf_counter() - started
    one_query = []
    for text in chunk_texts(10, 8, seed=3):
        begun = time.perf_counter()
        minilm_embed([text])
        one_query.append((time.perf_counter() - begun) * 1000)
    result["ingest"] = {"chunks": args.ingest, "word_pieces": tokens, "embed_s": embed_s, "write_s": write_s,
                        "chunks_per_s": args.ingest / (embed_s + write_s), "query_embed_ms": median(one_query)}
    log(f"{connection.vendor} ingestion: {result['ingest']['chunks_per_s']:.1f} chunks/s (embedding {embed_s:.1f} s, "
        f"writing {write_s * 1000:.0f} ms); one query's embedding {median(one_query):.1f} ms")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("both", "sqlite", "pg"), default="both")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest", type=int, default=64, help="chunks embedded with MiniLM for the ingestion rate")
    parser.add_argument("--data", choices=("clustered", "random"), default="clustered")
    parser.add_argument("--ef-search", default="40,100,200")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.ef_search = [int(x) for x in args.ef_search.split(",")]

    if args.child:  # set up by the parent: measure and print the figures as JSON
        from bench import chatter_calls

        chatter_calls.django_setup(dict(os.environ))
        print("RESULT " + json.dumps(measure_one(args)))
        return 0

    from bench.chatter_servers import chatter_database
    from bench.services import start_services

    print(machine_note())
    results = []
    with BenchRun("b12") as bench:
        for db in (("sqlite", "pg") if args.db == "both" else (args.db,)):
            extra = {}
            if db == "pg":
                extra["DATABASE_URL"] = start_services(bench).database_url
            database = chatter_database(bench, db, **extra)
            child = [sys.executable, "-m", "bench.b12_vector_search", "--child", "--chunks", str(args.chunks),
                     "--queries", str(args.queries), "--ingest", str(args.ingest), "--data", args.data,
                     "--ef-search", ",".join(map(str, args.ef_search))]
            begun = time.monotonic()
            done = subprocess.run(child, env=database.env, stdout=subprocess.PIPE, text=True, check=True)
            results.append(json.loads(done.stdout.split("RESULT ", 1)[1]))
            log(f"{db}: measured in {time.monotonic() - begun:.0f} s")
        print(machine_note())

    print(f"\nB12 vector search, {args.chunks:,} chunks of {DIMENSIONS} dimensions ({args.data}), k=10, "
          f"{args.queries} queries:")
    for r in results:
        print(f"- {r['db']}: loaded in {r['load_s']:.0f} s, index built in {r['index_build_s']:.1f} s; "
              f"exact search (every chunk compared) p50 {r['exact_p50_ms']:.1f} ms")
        for run in r["runs"]:
            print(f"  {run['label']}: p50 {run['p50_ms']:.1f} ms, p95 {run['p95_ms']:.1f} ms, "
                  f"max {run['max_ms']:.1f} ms, recall@10 {run['recall_at_10']:.3f}")
        ing = r["ingest"]
        print(f"  ingestion with MiniLM: {ing['chunks_per_s']:.1f} chunks/s ({ing['chunks']} chunks of "
              f"{ing['word_pieces'] / ing['chunks']:.0f} word pieces: embedding {ing['embed_s']:.1f} s, writing "
              f"{ing['write_s'] * 1000:.0f} ms); one query's embedding {ing['query_embed_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    run_main(main)
