"""Experiments: one or more targets (a template, a definition, a stored prompt's version or label) run over a
dataset's items, each target × item an ordinary run, judged by evaluators whose verdicts are scores of that run.
An LLM judge's calls are runs of their own, tagged as the experiment's judge runs, so the experiment's cost is
known apart for its targets and its judges."""
import uuid

from django.conf import settings
from django.db import models

from core.models import MONEY


class Experiment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        BUDGET_SPENT = "budget_spent"
        FAILED = "failed"

    STOPPED = (Status.CANCELLED, Status.BUDGET_SPENT, Status.FAILED)  # what resume goes on from

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="experiments")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.CASCADE, related_name="experiments")
    targets = models.JSONField()  # [{"name", and one of "template" | "definition" | "prompt"; "config"}]
    evaluators = models.JSONField(default=list, blank=True)  # [{"type", "name", …}] (experiments.evaluators)
    concurrency = models.PositiveSmallIntegerField(default=1)
    budget = models.DecimalField(max_digits=20, decimal_places=8, null=True, blank=True)  # USD, targets + judges
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    stop_reason = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    # Refreshed as it starts and with each result: a running experiment whose worker died stops refreshing it.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When it was last handed to the background workers (null: never, or run by the command): what it waits for.
    queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [models.CheckConstraint(condition=models.Q(concurrency__gte=1), name="experiment_concurrency")]

    def __str__(self) -> str:
        return self.name


class ExperimentResult(models.Model):
    """One target × item, written once, whole, when its run and its evaluators are done. Its figures are copies
    of its runs' (the target's, and the sum of its judge runs')."""

    class Status(models.TextChoices):
        COMPLETED = "completed"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="results")
    target = models.CharField(max_length=100)
    item = models.ForeignKey("datasets.DatasetItem", on_delete=models.CASCADE, related_name="experiment_results")
    execution = models.ForeignKey("workflows.WorkflowExecution", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="experiment_results")
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.TextField(blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    scores = models.JSONField(default=dict, blank=True)  # evaluator name → value (the Score rows' values)
    evaluator_errors = models.JSONField(default=dict, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**MONEY)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    judge_prompt_tokens = models.PositiveIntegerField(default=0)
    judge_completion_tokens = models.PositiveIntegerField(default=0)
    judge_total_tokens = models.PositiveIntegerField(default=0)
    judge_cost = models.DecimalField(**MONEY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["experiment", "target", "item"],
                                               name="experiment_result_once_per_target_and_item")]


class ExperimentRun(models.Model):
    """A run the experiment made: the target's run of an item, or an LLM judge's run about it. Until its pair's
    result is written (`result` null) it is kept under its pair (`target`, `item`): a judge that got no run slot
    is asked again later, the runs already made kept, not made again."""

    class Role(models.TextChoices):
        TARGET = "target"
        JUDGE = "judge"

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    result = models.ForeignKey(ExperimentResult, null=True, blank=True, on_delete=models.CASCADE, related_name="runs")
    target = models.CharField(max_length=100, blank=True, default="")
    item = models.ForeignKey("datasets.DatasetItem", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    execution = models.OneToOneField("workflows.WorkflowExecution", on_delete=models.CASCADE,
                                     related_name="experiment_run")
    role = models.CharField(max_length=8, choices=Role.choices)
    evaluator = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["experiment", "role"])]
