"""What LangGraph's Agent Server API says about a run that Chatter's own rows do not (the run itself is a
WorkflowExecution, its thread a Conversation), and the store: owner-scoped JSON items in namespaces."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from knowledge.vectors import EmbeddingField
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


class StoreVector(models.Model):
    """An embedding of a store item, for search by meaning (LangGraph's store with an index): the text at one of
    the index's JSON paths in its value, under that path ("$" for the whole value; a path matching several texts,
    such as "tags[*]", gives one vector each, "tags[*].0", "tags[*].1"…). `model` is the index's "provider:model":
    a search compares only vectors of the model it asks with."""

    item = models.ForeignKey(StoreItem, on_delete=models.CASCADE, related_name="vectors")
    field = models.CharField(max_length=1024)
    model = models.CharField(max_length=255)
    dimensions = models.PositiveIntegerField()
    embedding = EmbeddingField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "field"], name="store_vector_unique_field")]

    def __str__(self) -> str:
        return f"{self.item} {self.field}"


class ThreadExpiry(models.Model):
    """A thread's time to live (`ttl` on threads.create and threads.update, in minutes): the thread is deleted once
    `expires_at` has passed, by the sweep (agent_server.threads.threads_expired_delete, every minute)."""

    conversation = models.OneToOneField("conversations.Conversation", primary_key=True, on_delete=models.CASCADE,
                                        related_name="expiry")
    ttl_minutes = models.FloatField()
    expires_at = models.DateTimeField(db_index=True)


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


class Assistant(models.Model):
    """A user's own assistant: one of the graphs the user may run (`graph_id`: a registered graph, a template's key
    or `definition-<id>`) with a config, context and metadata of its own. Every change is a new numbered version;
    `current` is the one in force (set_latest can go back to an earlier one). The graphs themselves are assistants
    too ("system" ones, agent_server.assistants), without rows here."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assistants")
    # Null only inside the transaction that creates the assistant and its first version. RESTRICT: a version
    # goes only with its assistant.
    current = models.ForeignKey("AssistantVersion", null=True, on_delete=models.RESTRICT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.current.name if self.current_id else 'assistant'} ({self.pk})"


class AssistantVersion(models.Model):
    """One version of an assistant, as it was written (versions are never changed, only added)."""

    assistant = models.ForeignKey(Assistant, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    graph_id = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    config = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assistant", "version"], name="assistant_version_unique"),
                       models.CheckConstraint(condition=models.Q(version__gte=1), name="assistant_version_from_1")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
