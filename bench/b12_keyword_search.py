"""B12's hybrid and keyword search, SQLite (PostgreSQL with `--db pg`): `knowledge.search.collection_search` (the
product's call, as the API makes it: k=10, the query's vector through the `embed` hook) over one collection of
`--chunks` chunks of 150 words drawn from a vocabulary of 20,000 with Zipf's frequencies (word i about 1 / i), each
with a 384-dimension vector around one of 2,000 topic centres (B12's vector data), on one fresh database migrated
by this checkout.

    .venv/bin/python -m bench.b12_keyword_search [--chunks 100000] [--queries 20] [--rounds 2]
                                                 [--against /tmp/wt-base] [--modes hybrid,keyword]
                                                 [--db sqlite|pg] [--var-dir DIR]

Queries of four kinds, timed apart: a common word (w0-w50: w0-w19 are in more than half the chunks) with a
middling one (w100-w2000), a middling word alone, rare words in a sentence, one or two common words alone. Each
round times every query of each kind in each mode, in a process of each checkout on the same database
(`--against`: another checkout, e.g. a `git worktree` of the base commit with `.venv` linked; the sides alternate,
A B then B A). Prints p50 and p95 per side, mode and kind (all rounds pooled; wall time, and the process's CPU
time, which other processes' load moves less; on PostgreSQL the server's work is not in it), the load average
around each process, and how many of each search's 10 chunks the two sides share. `--var-dir`: a var dir whose
SQLite database an earlier run built (kept with `BENCH_KEEP_TMP=1`: `var-sqlite` in its temp dir), timed again
without building one (`--chunks` as it was built). `--db pg`: PostgreSQL from scripts/services.sh, a fresh
database (its own full-text search; the HNSW index built after the chunks are written).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import machine_note
from bench.processes import ROOT, BenchRun, log, run_main
from bench.stats import median, percentile

VOCABULARY = [f"w{i}" for i in range(20000)]
WEIGHTS = [1 / (i + 1) for i in range(len(VOCABULARY))]
DIMENSIONS, TOPICS = 384, 2000
KINDS = ("common + middling", "middling alone", "rare, in a sentence", "common alone")


def queries_made(count: int) -> dict[str, list[str]]:
    rng = random.Random(7)
    return {
        "common + middling": [f"w{rng.randint(0, 50)} w{rng.randint(100, 2000)}" for _ in range(count)],
        "middling alone": [f"w{rng.randint(100, 2000)}" for _ in range(count)],
        "rare, in a sentence": [f"what about w{rng.randint(1000, 19000)} and w{rng.randint(1000, 19000)}"
                                for _ in range(count)],
        # Words like "the" or "data": one or two of w0-w50 (w0-w19 in more than half the chunks, w50 in a quarter).
        "common alone": [" ".join(f"w{rng.randint(0, 50)}" for _ in range(1 + index % 2)) for index in range(count)]}


def vectors(count: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12).standard_normal((TOPICS, DIMENSIONS))
    points = centres[rng.integers(0, TOPICS, count)] + rng.standard_normal((count, DIMENSIONS)) / np.sqrt(DIMENSIONS)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype("float32")


def build(chunks: int) -> None:
    """One collection of `chunks` chunks, written through the ORM (the triggers keep every index in step; on
    PostgreSQL the HNSW index is built after, as b12_vector_search builds it)."""
    from django.db import connection

    from bench import chatter_calls
    from knowledge.models import Chunk, Collection, CollectionDocument
    from knowledge.vector_index import vector_index_create, vector_index_drop

    rng = random.Random(5)
    collection = Collection.objects.create(owner=chatter_calls.bench_user(), name="keywords", dimensions=DIMENSIONS,
                                           embedding_model="local/all-MiniLM-L6-v2", chunk_size=200, chunk_overlap=0)
    document = CollectionDocument.objects.create(collection=collection, title="words", content_hash="-",
                                                 status="ready")
    if connection.vendor == "postgresql":
        vector_index_drop(dimensions=DIMENSIONS)  # built once after, as b12_vector_search builds it: far quicker
    begun = time.perf_counter()
    for begin in range(0, chunks, 2000):
        batch = vectors(min(2000, chunks - begin), seed=begin)
        Chunk.objects.bulk_create([
            Chunk(text=" ".join(rng.choices(VOCABULARY, WEIGHTS, k=150)), dimensions=DIMENSIONS,
                  embedding=vector.tolist(), document=document, collection=collection, position=begin + i)
            for i, vector in enumerate(batch)])
    log(f"{chunks:,} chunks written in {time.perf_counter() - begun:.0f} s")
    if connection.vendor == "postgresql":
        begun = time.perf_counter()
        with connection.cursor() as cursor:  # the whole graph in memory while it builds
            cursor.execute("SET maintenance_work_mem = '1GB'")
        vector_index_create(dimensions=DIMENSIONS)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE knowledge_chunk")
        log(f"HNSW index built in {time.perf_counter() - begun:.0f} s")


def timed(args) -> dict:
    """In a process of the checkout measured: every query of each kind in each mode, in ms, and keyword's ids."""
    from bench import chatter_calls
    from knowledge.models import Collection
    from knowledge.search import collection_search

    collection = Collection.objects.get(name="keywords")
    user = chatter_calls.bench_user()
    kinds = queries_made(args.queries)
    asked = vectors(args.queries * len(KINDS), seed=999_999).tolist()
    now: list[list[float]] = []

    def search(query: str, mode: str, vector: list[float]):
        now[:] = [vector]
        return collection_search(collection=collection, user=user, query=query, k=10, mode=mode,
                                 embed=lambda model, texts: now)

    for query in kinds[args.kinds[0]][:3]:  # warm-up: the indexes' pages in memory
        search(query, "hybrid", asked[0])
    result: dict = {"ms": {}, "cpu": {}, "ids": {}}
    for mode in args.modes:
        for number, (kind, queries) in enumerate(kinds.items()):
            if kind not in args.kinds:
                continue
            times, cpu, ids = [], [], []
            for index, query in enumerate(queries):
                begun, begun_cpu = time.perf_counter(), time.process_time()
                hits = search(query, mode, asked[number * args.queries + index])
                times.append((time.perf_counter() - begun) * 1000)
                cpu.append((time.process_time() - begun_cpu) * 1000)
                ids.append([hit.chunk.pk for hit in hits])
            result["ms"][f"{mode}: {kind}"] = times
            result["cpu"][f"{mode}: {kind}"] = cpu
            result["ids"][f"{mode}: {kind}"] = ids
    return result


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="hybrid,keyword")
    parser.add_argument("--against", type=Path, help="another checkout timed on the same database, alternately")
    parser.add_argument("--kinds", default="1,2,3,4", help="the kinds of query timed, by number (1: a common word with "
                        "a middling one, 2: a middling word alone, 3: rare words, 4: common words alone)")
    parser.add_argument("--db", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--var-dir", type=Path, help="time the database an earlier run built there")
    parser.add_argument("--child", choices=("build", "time"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    try:
        args.kinds = [KINDS[int(number) - 1] for number in args.kinds.split(",")]
    except (ValueError, IndexError):
        parser.error("--kinds: numbers from 1 to 4, e.g. 2,3")
    if args.child:  # set up by the parent, in the checkout it runs from
        from bench import chatter_calls

        chatter_calls.django_setup(dict(os.environ))
        if args.child == "build":
            build(args.chunks)
        else:
            print("RESULT " + json.dumps(timed(args)))
        return
    from bench.chatter_servers import chatter_database, chatter_env
    from bench.services import start_services

    sides = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    with BenchRun("b12kw") as run:
        flags = ["--chunks", str(args.chunks), "--queries", str(args.queries), "--modes", ",".join(args.modes),
                 "--kinds", ",".join(str(KINDS.index(kind) + 1) for kind in args.kinds)]
        if args.var_dir:
            env = {**chatter_env(run, "sqlite"), "CHATTER_VAR_DIR": str(args.var_dir.resolve())}
        else:
            extra = {"DATABASE_URL": start_services(run).database_url} if args.db == "pg" else {}
            env = chatter_database(run, args.db, **extra).env
            subprocess.run([sys.executable, "-m", "bench.b12_keyword_search", "--child", "build", *flags],
                           env=env, cwd=ROOT, check=True)
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for number in range(args.rounds):
            for side in (list(sides) if number % 2 == 0 else list(sides)[::-1]):
                before = load()
                # This file, run by path, with the side's code (knowledge, bench's helpers) first on the path.
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", "time", *flags],
                                      env={**env, "PYTHONPATH": str(sides[side])}, cwd=sides[side],
                                      stdout=subprocess.PIPE, text=True, check=True)
                line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
                results[side].append(json.loads(line.removeprefix("RESULT ")))
                log(f"round {number + 1}, {side} ({sides[side]}): load {before} -> {load()}")
    for side, rounds in results.items():
        for name in rounds[0]["ms"]:
            times = [ms for one in rounds for ms in one["ms"][name]]
            cpu = [ms for one in rounds for ms in one["cpu"][name]]
            print(f"{side} {name}: p50 {median(times):.1f} ms, p95 {percentile(times, 95):.1f} ms, "
                  f"slowest {max(times):.1f}; CPU p50 {median(cpu):.1f} ms, p95 {percentile(cpu, 95):.1f} "
                  f"({len(times)} searches, {args.chunks:,} chunks, k=10)")
    if args.against:
        for name in results["this"][0]["ids"]:
            pairs = zip(results["this"][0]["ids"][name], results["against"][0]["ids"][name])
            shared = [len(set(mine) & set(theirs)) / max(len(theirs), 1) for mine, theirs in pairs]
            same = sum(mine == theirs for mine, theirs in zip(results["this"][0]["ids"][name],
                                                             results["against"][0]["ids"][name]))
            print(f"{name}: the sides share {sum(shared) / len(shared):.3f} of the 10 chunks; "
                  f"the same 10 in the same order in {same} of {len(shared)}")
    print(machine_note())


if __name__ == "__main__":
    run_main(main)
