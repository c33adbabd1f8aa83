"""What LangGraph's Agent Server API says about a run that Chatter's own rows do not (the run itself is a
WorkflowExecution, its thread a Conversation), and the store: owner-scoped JSON items in namespaces."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from workflows.models import WorkflowExecution, WorkflowSchedule


class AgentRun(models.Model):
    """A run started through /langgraph/: its assistant, metadata, stream modes and multitask strategy."""

    class Strategy(models.TextChoices):
        REJECT = "reject"
        ENQUEUE = "enqueue"
        INTERRUPT = "interrupt"
        ROLLBACK = "rollback"

    execution = models.OneToOneField(WorkflowExecution, primary_key=True, on_delete=models.CASCADE,
                                     related_name="agent_run")
    assistant_id = models.CharField(max_length=255)
    metadata = models.JSONField(default=dict, blank=True)
    stream_mode = models.JSONField(default=list, blank=True)
    multitask_strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.ENQUEUE)
    # Written pending behind its thread's run in progress; enqueued when that run ends (agent_server.receivers).
    queued = models.BooleanField(default=False)
    # Rolled back (multitask_strategy rollback): cancelled, its messages taken out of the thread, and gone from the
    # thread's runs and history; the run itself stays on the books (its tokens and cost were spent).
    rolled_back = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.assistant_id} run {self.execution_id}"


class StoreItem(models.Model):
    """One item of LangGraph's store. `namespace` is its labels joined by "." (a label never holds one), so a
    namespace prefix is a string prefix ending at a label boundary."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="store_items")
    namespace = models.CharField(max_length=1024)
    key = models.CharField(max_length=1024)
    value = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "namespace", "key"], name="store_item_unique_key")]
        indexes = [models.Index(fields=["owner", "namespace"])]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.key}"


class AgentCron(models.Model):
    """What LangGraph's API says about a cron that its WorkflowSchedule (the cron itself: the same row as
    /api/v1/schedules/, run by the same runner) does not: the assistant as named, the payload as sent, metadata."""

    schedule = models.OneToOneField(WorkflowSchedule, primary_key=True, on_delete=models.CASCADE,
                                    related_name="agent_cron")
    assistant_id = models.CharField(max_length=255)
    payload = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    on_run_completed = models.CharField(max_length=8, blank=True, default="")  # stateless crons: delete | keep
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.assistant_id} cron {self.schedule_id}"
