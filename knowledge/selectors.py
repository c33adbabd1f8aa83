from __future__ import annotations

from knowledge.models import Chunk
from knowledge.vector_index import chunks_nearest_indexed


def chunks_nearest(*, vector: list[float], k: int, exact: bool = False) -> list[Chunk]:
    """The `k` chunks of the vector's size nearest to it by cosine distance (annotated `distance`), nearest
    first: through the dimension's vector index (approximate, knowledge/vector_index.py), or, `exact`, by
    comparing every chunk of that size (ties by id)."""
    return chunks_nearest_indexed(vector=vector, k=k, exact=exact)
