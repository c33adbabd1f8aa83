from __future__ import annotations

from django.db.models import QuerySet

from knowledge.models import Chunk
from knowledge.vectors import CosineDistance


def chunks_nearest(*, vector: list[float], k: int) -> QuerySet[Chunk]:
    """The `k` chunks of the vector's size nearest to it by cosine distance (annotated `distance`), nearest
    first; ties by id."""
    return (Chunk.objects.filter(dimensions=len(vector))
            .annotate(distance=CosineDistance("embedding", [float(x) for x in vector]))
            .order_by("distance", "id")[:k])
