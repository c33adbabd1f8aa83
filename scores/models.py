"""Scores: a named judgement of a run or of a message — a number, a yes/no or a category — from the
API, a person or an evaluator. Numeric and boolean scores have a mean (a boolean counts 1 or 0)."""
import uuid

from django.conf import settings
from django.db import models


class Score(models.Model):
    class DataType(models.TextChoices):
        NUMERIC = "numeric"
        BOOLEAN = "boolean"
        CATEGORICAL = "categorical"

    class Source(models.TextChoices):
        API = "api"
        HUMAN = "human"
        EVALUATOR = "evaluator"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scores")
    name = models.CharField(max_length=100)
    data_type = models.CharField(max_length=16, choices=DataType.choices)
    value = models.FloatField(null=True, blank=True)  # numeric, or 1/0 for a boolean; null for a category
    category = models.CharField(max_length=100, blank=True, default="")
    comment = models.TextField(blank=True, default="")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    # The run it judges; a message's score names the message and the run that wrote it (when one did).
    execution = models.ForeignKey("workflows.WorkflowExecution", null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="scores")
    message = models.ForeignKey("conversations.Message", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="scores")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["execution", "name"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(execution__isnull=False) | models.Q(message__isnull=False),
                                   name="score_has_a_target"),
            models.CheckConstraint(
                condition=models.Q(data_type="categorical", value__isnull=True)
                | (~models.Q(data_type="categorical") & models.Q(value__isnull=False, category="")),
                name="score_value_matches_type"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.category if self.data_type == 'categorical' else self.value}"

    @property
    def shown_value(self):
        if self.data_type == self.DataType.CATEGORICAL:
            return self.category
        if self.data_type == self.DataType.BOOLEAN:
            return bool(self.value)
        return self.value
