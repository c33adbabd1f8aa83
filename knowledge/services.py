from __future__ import annotations

from django.db import transaction

from knowledge.models import Chunk


@transaction.atomic
def chunks_create(*, texts: list[str], embeddings: list[list[float]]) -> list[Chunk]:
    """Chunks of `texts` with their `embeddings`, in one statement."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts and {len(embeddings)} embeddings")
    return Chunk.objects.bulk_create(
        [Chunk(text=text, dimensions=len(embedding), embedding=embedding) for text, embedding in zip(texts, embeddings)])
