"""Datasets: named sets of items — an input, the output expected, metadata — typed in, imported from
CSV or JSONL, or taken from past runs."""
import uuid

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="dataset_name_unique_per_owner")]

    def __str__(self) -> str:
        return self.name


class DatasetItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    input = models.JSONField()
    expected_output = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The run it was taken from ("add this run to a dataset"), while that run exists.
    source_execution = models.ForeignKey("workflows.WorkflowExecution", null=True, blank=True,
                                         on_delete=models.SET_NULL, related_name="dataset_items")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.dataset_id}: {str(self.input)[:50]}"
