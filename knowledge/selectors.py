from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from knowledge.models import Chunk, Collection, CollectionDocument
from knowledge.vectors import CosineDistance


def collection_list(*, user) -> QuerySet[Collection]:
    """The collections `user` sees: their own and the shared ones (annotated `document_count`)."""
    return Collection.objects.filter(Q(owner=user) | Q(shared=True)).select_related("owner").annotate(
        document_count=Count("documents"))


def document_list(*, collection: Collection) -> QuerySet[CollectionDocument]:
    """A collection's documents, oldest first, without their text."""
    return collection.documents.defer("text")


def chunks_nearest(*, vector: list[float], k: int, chunks: QuerySet[Chunk] | None = None) -> QuerySet[Chunk]:
    """The `k` chunks (of `chunks`, all by default) of the vector's size nearest to it by cosine distance
    (annotated `distance`), nearest first; ties by id."""
    chunks = Chunk.objects.all() if chunks is None else chunks
    return (chunks.filter(dimensions=len(vector))
            .annotate(distance=CosineDistance("embedding", [float(x) for x in vector]))
            .order_by("distance", "id")[:k])
