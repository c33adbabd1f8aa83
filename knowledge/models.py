from django.db import models

from knowledge.vectors import EmbeddingField


class Chunk(models.Model):
    """A piece of text and its embedding. The column has no fixed size: an embedding model's vectors have their
    own (`dimensions`), and a search compares vectors of one size."""

    text = models.TextField()
    dimensions = models.PositiveIntegerField()
    embedding = EmbeddingField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(dimensions__gt=0), name="chunk_dimensions_positive")]

    def __str__(self) -> str:
        return self.text[:60]
