"""Chunks searched by cosine distance on both databases (issue 45): pgvector's `<=>` on PostgreSQL, sqlite-vec's
vec_distance_cosine on SQLite, each ranking as exact search in numpy does (make test runs this file on each)."""
import json
from pathlib import Path

import numpy as np
import pytest
from django.db import connection

from engine.embeddings_minilm import minilm_embed
from knowledge.models import Chunk
from knowledge.selectors import chunks_nearest
from knowledge.services import chunks_create

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "minilm-reference.json").read_text())


def exact_ranking(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    similarity = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    return [int(i) for i in np.argsort(-similarity, kind="stable")[:k]]


@pytest.mark.django_db
def test_issue_45_knn_by_cosine_over_100_vectors_ranks_as_exact_search():
    assert connection.vendor in ("sqlite", "postgresql")
    rng = np.random.default_rng(45)
    vectors = rng.standard_normal((100, 384)).astype(np.float32)
    chunks = chunks_create(texts=[f"chunk {i}" for i in range(100)], embeddings=vectors.tolist())
    by_id = {chunk.pk: i for i, chunk in enumerate(chunks)}

    for query in rng.standard_normal((5, 384)).astype(np.float32):
        found = list(chunks_nearest(vector=query.tolist(), k=10, exact=True))
        expected = exact_ranking(vectors, query, 10)
        assert [by_id[chunk.pk] for chunk in found] == expected
        exact = [1 - float(vectors[i] @ query / (np.linalg.norm(vectors[i]) * np.linalg.norm(query))) for i in expected]
        assert [chunk.distance for chunk in found] == pytest.approx(exact, abs=1e-5)


@pytest.mark.django_db
def test_issue_45_a_chunk_keeps_its_vector_and_a_search_compares_vectors_of_its_size():
    chunks_create(texts=["three", "four"], embeddings=[[1.0, 0.5, -0.25], [1.0, 0.0, 0.0, 0.0]])

    stored = Chunk.objects.get(text="three").embedding
    assert stored == [1.0, 0.5, -0.25]
    assert [chunk.text for chunk in chunks_nearest(vector=[1.0, 0.0, 0.0], k=5)] == ["three"]
    assert [chunk.text for chunk in chunks_nearest(vector=[0.0, 1.0, 0.0, 0.0], k=5)] == ["four"]


@pytest.mark.django_db
def test_issue_45_search_by_meaning_with_the_small_model_finds_the_paraphrase_first():
    question, *passages = REFERENCE["sentences"][:3]  # kettle leaks / cracked seal / bicycle derailleur
    passages += REFERENCE["sentences"][10:13]  # three paragraphs about budgets
    vectors, _ = minilm_embed(passages)
    chunks_create(texts=passages, embeddings=vectors)

    (query,), _ = minilm_embed([question])
    found = list(chunks_nearest(vector=query, k=3))
    assert found[0].text == "A cracked seal lets water out of the appliance."
    assert found[0].distance < found[1].distance - 0.1
