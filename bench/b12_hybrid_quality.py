"""B12's quality figure: recall@5 of keyword, vector and hybrid search on a labelled set of paraphrased questions
(bench/data/b12_paraphrases.json: 30 short documents, 30 questions each answered by one of them, in other words).

    .venv/bin/python -m bench.b12_hybrid_quality [--rrf-k 60]

- keyword: SQLite FTS5 (porter stemming, unicode61), the question's distinct words OR-ed, ranked by BM25 over the
  collection's own statistics as knowledge.search ranks on SQLite — the generous form of keyword search (an AND
  of the words, as PostgreSQL's plainto_tsquery makes, finds less on paraphrases);
- vector: all-MiniLM-L6-v2 in process (engine/embeddings_minilm.py), cosine, every document compared;
- hybrid: reciprocal rank fusion of the two rankings, score = sum of 1 / (rrf_k + rank) over the lists a
  document is in.
Prints recall@1 and recall@5 of each (the share of questions whose document is in the first 1 or 5) and the
questions each mode misses at 5. The target: hybrid's recall@5 above keyword's.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
from pysqlite3 import dbapi2 as sqlite3  # FTS5, as the project's SQLite backend has it

DATA = Path(__file__).parent / "data" / "b12_paraphrases.json"


def keyword_ranking(db, query: str) -> list[str]:
    """The product's SQLite ranking (knowledge.search._bm25_ranked): BM25 over the collection's own statistics, each
    word's frequency from FTS5's highlight marks, lengths in characters against the average of the documents found."""
    words = list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:30]
    count = db.execute("SELECT count(*) FROM documents").fetchone()[0]
    holdings = []
    for word in words:
        found = db.execute("SELECT name, highlight(documents, 1, char(1), char(2)) FROM documents WHERE documents "
                           "MATCH ?", [f'"{word}"']).fetchall()
        holdings.append([(name, (often := marked.count("\x01")), len(marked) - 2 * often) for name, marked in found])
    lengths = {name: length for holding in holdings for name, _, length in holding}
    average = (sum(lengths.values()) / len(lengths) if lengths else 1.0) or 1.0
    scores: dict[str, float] = {}
    for holding in holdings:
        idf = max(math.log((count - len(holding) + 0.5) / (len(holding) + 0.5)), 1e-6)
        for name, often, length in holding:
            norm = 1 - 0.75 + 0.75 * length / average
            scores[name] = scores.get(name, 0.0) + idf * often * 2.2 / (often + 1.2 * norm)
    return sorted(scores, key=lambda name: (-scores[name], name))


def rrf(rankings: list[list[str]], k: int) -> list[str]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, name in enumerate(ranking, start=1):
            scores[name] = scores.get(name, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda name: (-scores[name], name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rrf-k", type=int, default=60)
    args = parser.parse_args()

    from engine.embeddings_minilm import minilm_embed

    data = json.loads(DATA.read_text())
    names = list(data["documents"])
    texts = [data["documents"][name] for name in names]
    questions = data["questions"]

    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE documents USING fts5(name UNINDEXED, body, tokenize='porter unicode61')")
    db.executemany("INSERT INTO documents(name, body) VALUES (?, ?)", zip(names, texts))

    doc_vectors = np.array(minilm_embed(texts)[0], dtype=np.float32)
    query_vectors = np.array(minilm_embed([q["query"] for q in questions])[0], dtype=np.float32)

    rankings: dict[str, list[list[str]]] = {"keyword": [], "vector": [], "hybrid": []}
    for question, vector in zip(questions, query_vectors):
        keyword = keyword_ranking(db, question["query"])
        by_vector = [names[i] for i in np.argsort(-(doc_vectors @ vector), kind="stable")]
        rankings["keyword"].append(keyword)
        rankings["vector"].append(by_vector)
        rankings["hybrid"].append(rrf([keyword, by_vector], args.rrf_k))

    print(f"B12 quality: {len(questions)} paraphrased questions over {len(names)} documents "
          f"(bench/data/b12_paraphrases.json), hybrid = RRF k={args.rrf_k}")
    for mode, ranked in rankings.items():
        at1 = sum(q["relevant"] in r[:1] for q, r in zip(questions, ranked)) / len(questions)
        at5 = sum(q["relevant"] in r[:5] for q, r in zip(questions, ranked)) / len(questions)
        missed = [q["query"] for q, r in zip(questions, ranked) if q["relevant"] not in r[:5]]
        print(f"- {mode:7}: recall@1 {at1:.3f}, recall@5 {at5:.3f}; missed at 5: {len(missed)}"
              + (f" ({'; '.join(missed)})" if missed else ""))


if __name__ == "__main__":
    main()
