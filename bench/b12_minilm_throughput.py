"""B12's ingestion figure, in part: all-MiniLM-L6-v2 in process (engine/embeddings_minilm.py), chunks/s.

    .venv/bin/python -m bench.b12_minilm_throughput [--chunks 128] [--words 150] [--rounds 3]

Loads the model (timed), then embeds `--chunks` distinct chunks of about `--words` words (about 1.3 word pieces
each) in one call, `--rounds` times, and prints chunks/s and word pieces/s by wall time and by this process's CPU
time (the CPU figure is what a quiet machine would give; wall time on shared cores is lower), and the per-call
figures of short texts (one query at a time, as search embeds).
"""
from __future__ import annotations

import argparse
import random
import time

from bench.stats import median

WORDS = ("budget reserve estimate call settle tokens cost model provider chunk document search collection vector "
         "index ingestion parser seal kettle water leak appliance derailleur cable barrel adjuster gear chain "
         "database transaction lock query plan latency throughput worker queue retry timeout").split()


def chunk_texts(count: int, words: int, seed: int = 45) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f". Chunk {i}." for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=128)
    parser.add_argument("--words", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from engine.embeddings_minilm import minilm_embed, minilm_load

    started = time.perf_counter()
    minilm_load()
    print(f"load: {time.perf_counter() - started:.2f} s")

    texts = chunk_texts(args.chunks, args.words)
    walls, cpus, tokens = [], [], 0
    for _ in range(args.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        _, tokens = minilm_embed(texts)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(f"{args.chunks} chunks of {tokens / args.chunks:.0f} word pieces, median of {args.rounds} rounds:")
    print(f"  wall: {args.chunks / median(walls):.1f} chunks/s, {tokens / median(walls):.0f} word pieces/s")
    print(f"  CPU:  {args.chunks / median(cpus):.1f} chunks/s, {tokens / median(cpus):.0f} word pieces/s")

    queries = chunk_texts(20, 8, seed=12)
    times = []
    for query in queries:
        wall = time.perf_counter()
        minilm_embed([query])
        times.append(time.perf_counter() - wall)
    print(f"one query of ~12 word pieces: median {median(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
