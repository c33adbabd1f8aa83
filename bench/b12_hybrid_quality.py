"""B12's quality figure: recall@5 of keyword, vector and hybrid search on a labelled set of paraphrased questions
(bench/data/b12_paraphrases.json: 30 short documents, 30 questions each answered by one of them, in other words).

    .venv/bin/python -m bench.b12_hybrid_quality [--db sqlite|pg]

The product's own search, `knowledge.search.collection_search` (k=5) in each mode, on a fresh SQLite database
migrated by this checkout (`--db pg`: PostgreSQL from scripts/services.sh): one collection, each document one chunk,
embedded by all-MiniLM-L6-v2 in process (engine/embeddings_minilm.py), the questions' vectors through the search's
`embed` hook:
- keyword: SQLite FTS5 (porter stemming, unicode61), the question's distinct words OR-ed, ranked by BM25 over the
  collection's own statistics (knowledge/keyword_search.py) — the generous form of keyword search (an AND of the
  words, as PostgreSQL's plainto_tsquery makes, finds less on paraphrases); on PostgreSQL the same words OR-ed in
  its English full-text search, ranked by `ts_rank_cd` (docs/knowledge.md);
- vector: cosine distance (over 30 chunks the index's candidates are all of them: exact);
- hybrid: reciprocal rank fusion of the two rankings (k=60), as the API answers it.
Prints recall@1 and recall@5 of each (the share of questions whose document is first, or in the first 5) and the
questions each mode misses at 5. The target: hybrid's recall@5 above keyword's.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.processes import BenchRun, run_main

DATA = Path(__file__).parent / "data" / "b12_paraphrases.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "pg"), default="sqlite")
    args = parser.parse_args()
    from bench import chatter_calls
    from bench.chatter_servers import chatter_database
    from bench.services import start_services

    with BenchRun("b12q") as run:
        extra = {"DATABASE_URL": start_services(run).database_url} if args.db == "pg" else {}
        chatter_calls.django_setup(chatter_database(run, args.db, **extra).env)
        from engine.embeddings_minilm import minilm_embed
        from knowledge.models import Chunk, Collection, CollectionDocument
        from knowledge.search import RRF_K, collection_search

        data = json.loads(DATA.read_text())
        questions = data["questions"]
        user = chatter_calls.bench_user()
        collection = Collection.objects.create(owner=user, name="paraphrases", dimensions=384, chunk_size=200,
                                               embedding_model="local/all-MiniLM-L6-v2", chunk_overlap=0)
        names = list(data["documents"])
        vectors = minilm_embed([data["documents"][name] for name in names])[0]
        for name, vector in zip(names, vectors):
            document = CollectionDocument.objects.create(collection=collection, title=name, status="ready",
                                                         text=data["documents"][name], content_hash=name)
            Chunk.objects.create(text=document.text, dimensions=384, embedding=vector, document=document,
                                 collection=collection, position=0)
        asked = minilm_embed([question["query"] for question in questions])[0]

        print(f"B12 quality: {len(questions)} paraphrased questions over {len(names)} documents "
              f"(bench/data/b12_paraphrases.json), hybrid = RRF k={RRF_K}, the product's collection_search, "
              f"{args.db}")
        for mode in ("keyword", "vector", "hybrid"):
            found = [[hit.chunk.document.title for hit in collection_search(
                collection=collection, user=user, query=question["query"], k=5, mode=mode,
                embed=lambda model, texts, vector=vector: [vector])] for question, vector in zip(questions, asked)]
            at1 = sum(q["relevant"] in titles[:1] for q, titles in zip(questions, found)) / len(questions)
            at5 = sum(q["relevant"] in titles[:5] for q, titles in zip(questions, found)) / len(questions)
            missed = [q["query"] for q, titles in zip(questions, found) if q["relevant"] not in titles[:5]]
            print(f"- {mode:7}: recall@1 {at1:.3f}, recall@5 {at5:.3f}; missed at 5: {len(missed)}"
                  + (f" ({'; '.join(missed)})" if missed else ""))


if __name__ == "__main__":
    run_main(main)
