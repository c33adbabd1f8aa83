"""SQLite: a collection's best chunks for some words by BM25 over the collection's own statistics (its chunks, their
average length in characters, each term's document frequency: knowledge.keyword_statistics), never the FTS5
index's, which counts every user's chunks. Why and the figures: docs/knowledge.md#keyword-ranking, B12 in
bench/RESULTS.md.

The rarest terms are read first, each from the index's postings (its chunks and how often it is in each); a term
whose every chunk together with the terms after it cannot reach the best `limit` found so far is not read
(MaxScore: a term adds less than idf × (k1 + 1) to any chunk), nor, once `limit` chunks are found, one whose
chunks would take the matches read past SCAN_ROWS. Those terms are then counted in the texts of the best
`rescore_depth(limit)` chunks found (exact when no chunk further down could enter the best `limit` by them); the
rest keep what the rarer terms gave them (common terms' low weight, as Elasticsearch's common terms query treats
them). A term read is read over at most SCAN_ROWS matches, the first in the index's order (its oldest chunks).
"""
from __future__ import annotations

import heapq
import math
from collections import Counter

from django.db import connection

from knowledge.keyword_statistics import tokens

BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants
IDF_FLOOR = 1e-6  # FTS5's, for a term in more than half the chunks
# How many matches a search reads from the index (a match a row: about 1 µs to read, as much again to score). Once
# the best `limit` are found, a term whose chunks would take the matches read past it is not read (it is counted
# as the common ones are); a term read stops at as many (its first matches in the index's order: its oldest
# chunks). B12 in bench/RESULTS.md.
SCAN_ROWS = 5000
_STATISTICS = "SELECT chunks, characters FROM knowledge_collection_text WHERE collection_id = %s"
_FREQUENCIES = "SELECT term, chunks FROM knowledge_collection_words WHERE collection_id = %s AND term IN ({terms})"
# One term's chunks in the collection with their length, a row a match (counted here: a GROUP BY's sort took as
# long as the read). The postings are read first (the index's, for that term), then each chunk's narrow row.
_POSTINGS = ("SELECT v.doc, l.characters FROM knowledge_chunk_terms v "
             "JOIN knowledge_chunk_length l ON l.chunk_id = v.doc "
             "WHERE v.term = %s AND l.collection_id = %s{within} LIMIT %s")
_WITHIN = " AND v.doc IN ({within})"
# Chunks' texts, to count the common terms in (tokenized as the index does: knowledge.keyword_statistics.tokens).
# Through the index, each chunk's lookup cost about 0.1 ms (a seek into the term's postings per chunk).
_TEXTS = "SELECT id, text FROM knowledge_chunk WHERE id IN ({ids})"


def rescore_depth(limit: int) -> int:
    """How many chunks found by the rarer terms at most get the common terms counted in their text (in one pass:
    at 100,000 chunks a pass of 40 took about 4 ms, the rarer terms' own read a few)."""
    return max(limit, 40)


def _kth(scores: dict[int, float], limit: int) -> float:
    return heapq.nlargest(limit, scores.values())[-1] if len(scores) >= limit else -math.inf


def bm25_ranked(*, collection_id: str, words: list[str], limit: int,
                within: tuple[str, list] | None = None) -> list[tuple[int, float]]:
    """The ids of the best `limit` chunks of the collection (of those `within` selects, SQL and its parameters,
    when given) holding any of `words`, with their BM25 score, best first (ties by id)."""
    with connection.cursor() as cursor:
        cursor.execute(_STATISTICS, [collection_id])
        row = cursor.fetchone()
        if row is None:
            return []
        count, characters = row
        average = characters / count or 1.0
        terms = sorted({term for found in tokens(cursor, dict(enumerate(words))).values() for term in found})
        if not terms:
            return []
        cursor.execute(_FREQUENCIES.format(terms=", ".join(["%s"] * len(terms))), [collection_id, *terms])
        frequency = dict(cursor.fetchall())
        terms = sorted(frequency, key=lambda term: (frequency[term], term))  # rarest first
        idf = {term: max(math.log((count - frequency[term] + 0.5) / (frequency[term] + 0.5)), IDF_FLOOR)
               for term in terms}

        def weight(term: str, often: int, length: int) -> float:
            norm = 1 - BM25_B + BM25_B * length / average
            return idf[term] * often * (BM25_K1 + 1) / (often + BM25_K1 * norm)

        lengths: dict[int, int] = {}
        scores: dict[int, float] = {}
        postings = _POSTINGS.format(within=_WITHIN.format(within=within[0]) if within else "")
        read = spent = 0
        for read, term in enumerate(terms):  # noqa: B007 - `read`: how many were read, after the loop
            left = sum(idf[later] for later in terms[read:]) * (BM25_K1 + 1)
            # The margin keeps a float sum's last bits from pruning a chunk that could tie.
            if len(scores) >= limit and (left < _kth(scores, limit) - 1e-9 or spent + frequency[term] > SCAN_ROWS):
                break
            cursor.execute(postings, [term, collection_id, *(within[1] if within else ()), SCAN_ROWS + 1])
            rows = cursor.fetchall()
            if len(rows) > SCAN_ROWS:  # the term's read stops here: its last chunk, perhaps cut short, left out
                last = rows[-1][0]
                rows = [row for row in rows if row[0] != last] or rows[:SCAN_ROWS]
            spent += len(rows)
            lengths.update(rows)
            for chunk_id, often in Counter(chunk_id for chunk_id, _ in rows).items():
                scores[chunk_id] = scores.get(chunk_id, 0.0) + weight(term, often, lengths[chunk_id])
        else:
            read = len(terms)
        common = terms[read:]
        if common:
            reach = sum(idf[term] for term in common) * (BM25_K1 + 1)
            _common_added(cursor, common, reach, lengths, scores, weight, limit)
    best = heapq.nsmallest(limit, scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))
    return [(chunk_id, scores[chunk_id]) for chunk_id in best]


def _common_added(cursor, common: list[str], reach: float, lengths, scores, weight, limit: int) -> None:
    """`scores` with the common terms' weight added to the best `rescore_depth(limit)` chunks found, unless no chunk
    could reach the best `limit` by them (`reach`: more than the common terms can add to any chunk)."""
    order = heapq.nsmallest(rescore_depth(limit) + 1, scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))
    if len(order) > limit and scores[order[limit]] + reach < scores[order[limit - 1]] - 1e-9:
        order = order[:limit]  # the best `limit` stay the best whatever the common terms add: they alone counted
    batch = order[:rescore_depth(limit)]
    cursor.execute(_TEXTS.format(ids=", ".join(["%s"] * len(batch))), batch)
    found = tokens(cursor, dict(cursor.fetchall()), terms=common)
    for chunk_id in batch:
        for term in common:  # in one order, as the rarer terms were added: equal chunks, equal sums
            if found[chunk_id][term]:
                scores[chunk_id] += weight(term, found[chunk_id][term], lengths[chunk_id])
