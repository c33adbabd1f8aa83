"""B12's keyword side on SQLite: `knowledge.search.keyword_ranked` (the product's call, as a hybrid search makes it)
over one collection of `--chunks` chunks of 150 words drawn from a vocabulary of 20,000 with Zipf's frequencies
(word i about 1 / i), in process on a fresh SQLite database, best `--limit` asked (a hybrid search of k=10 asks 40).

    .venv/bin/python -m bench.b12_keyword_search [--chunks 20000] [--queries 20] [--limit 40]

Queries of two kinds, timed apart: a common word with a middling one (the commonest words are in nearly every
chunk), and rare words in a sentence. Prints the median and the slowest of each kind, in ms.
"""
from __future__ import annotations

import argparse
import random
import time

from bench import chatter_calls
from bench.chatter_servers import chatter_database
from bench.machine import machine_note
from bench.processes import BenchRun, log, run_main
from bench.stats import median

VOCABULARY = [f"w{i}" for i in range(20000)]
WEIGHTS = [1 / (i + 1) for i in range(len(VOCABULARY))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    with BenchRun("b12kw") as run:
        database = chatter_database(run, "sqlite")
        chatter_calls.django_setup(database.env)
        from knowledge.models import Chunk, Collection, CollectionDocument
        from knowledge.search import keyword_ranked

        rng = random.Random(5)
        collection = Collection.objects.create(owner=chatter_calls.bench_user(), name="keywords", dimensions=4,
                                               embedding_model="local/local-embed-1", chunk_size=200, chunk_overlap=0)
        document = CollectionDocument.objects.create(collection=collection, title="words", content_hash="-",
                                                     status="ready")
        for begin in range(0, args.chunks, 5000):
            Chunk.objects.bulk_create([
                Chunk(text=" ".join(rng.choices(VOCABULARY, WEIGHTS, k=150)), dimensions=4, embedding=[1.0, 0, 0, 0],
                      document=document, collection=collection, position=begin + i)
                for i in range(min(5000, args.chunks - begin))])
        log(f"{args.chunks:,} chunks written")
        chunks = Chunk.objects.filter(collection=collection)
        kinds = {
            "common + middling": [f"w{rng.randint(0, 50)} w{rng.randint(100, 2000)}" for _ in range(args.queries)],
            "rare, in a sentence": [f"what about w{rng.randint(1000, 19000)} and w{rng.randint(1000, 19000)}"
                                    for _ in range(args.queries)]}
        for query in kinds["common + middling"][:3]:  # warm-up: the index's pages in memory
            keyword_ranked(chunks, query, args.limit)
        for kind, queries in kinds.items():
            times = []
            for query in queries:
                begun = time.perf_counter()
                keyword_ranked(chunks, query, args.limit)
                times.append((time.perf_counter() - begun) * 1000)
            print(f"{kind}: median {median(times):.1f} ms, slowest {max(times):.1f} ms ({len(times)} queries, "
                  f"{args.chunks:,} chunks, best {args.limit})")
        print(machine_note())


if __name__ == "__main__":
    run_main(main)
