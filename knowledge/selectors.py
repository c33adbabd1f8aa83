from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge import vector_index


def collection_list(*, user) -> QuerySet[Collection]:
    """The collections `user` sees: their own and the shared ones (annotated `document_count`)."""
    return Collection.objects.filter(Q(owner=user) | Q(shared=True)).select_related("owner").annotate(
        document_count=Count("documents"))


def document_list(*, collection: Collection) -> QuerySet[CollectionDocument]:
    """A collection's documents, oldest first, without their text."""
    return collection.documents.defer("text")


def chunks_nearest(*, vector: list[float], k: int, chunks: QuerySet[Chunk] | None = None,
                   exact: bool = False, candidates: int | None = None) -> list[Chunk]:
    """The `k` chunks (of `chunks`, all by default) of the vector's size nearest to it by cosine distance (annotated
    `distance`), nearest first: through the dimension's vector index (approximate, knowledge/vector_index.py), or,
    `exact`, by comparing every chunk of that size (ties by id). `candidates`: on SQLite, how many of the index's
    nearest are re-scored (by default as many as a search of `k`: knowledge.vector_index.rescore_candidates)."""
    return vector_index.chunks_nearest_indexed(vector=vector, k=k, chunks=chunks, exact=exact, candidates=candidates)


def chunk_distances_nearest(*, vector: list[float], k: int, chunks: QuerySet[Chunk] | None = None,
                            candidates: int | None = None) -> list[tuple[int, float]]:
    """`chunks_nearest`'s answer as (id, distance) pairs, without reading the chunks."""
    return vector_index.chunk_distances_nearest(vector=vector, k=k, chunks=chunks, candidates=candidates)
