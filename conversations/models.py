import uuid

from django.conf import settings
from django.db import models

from core.models import MONEY, TokenTotals, non_negative


class Conversation(TokenTotals):
    class Status(models.TextChoices):
        ACTIVE = "active"
        ARCHIVED = "archived"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # no index of its own: the (owner, -created_at) index leads with it (one index less to write per conversation)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations",
                              db_index=False)
    title = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    # Stored aggregates: always the exact sum over the messages (I1), changed by the services that save and delete
    # messages, in the statement that locks this row.
    message_count = models.PositiveIntegerField(default=0)
    # The sequence of the last message ever saved here (deleted ones included): the next one gets last + 1.
    last_sequence = models.PositiveIntegerField(default=0)
    total_cost = models.DecimalField(**MONEY)
    metadata = models.JSONField(default=dict, blank=True)
    # Runs queued behind the one in progress (LangGraph's multitask_strategy enqueue), handed over as it ends: the
    # ending run's write returns this row, so a run ends without a read whenever nothing waits behind it.
    runs_queued = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]
        constraints = [
            *TokenTotals.Meta.constraints,
            *non_negative("total_cost", model="conversation"),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.id}"


class Message(TokenTotals):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"
        TOOL = "tool"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # no index of its own: message_sequence_unique (conversation, sequence) leads with it
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False)
    sequence = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    execution = models.ForeignKey(
        "workflows.WorkflowExecution", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    cached_prompt_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**MONEY)
    provider_used = models.CharField(max_length=64, blank=True, default="")
    model_used = models.CharField(max_length=255, blank=True, default="")
    finish_reason = models.CharField(max_length=64, blank=True, default="")
    response_time_ms = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    usage_raw = models.JSONField(default=dict, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    error_message = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "sequence"]
        constraints = [
            *TokenTotals.Meta.constraints,
            models.UniqueConstraint(fields=["conversation", "sequence"], name="message_sequence_unique"),
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="message_sequence_positive"),
            models.CheckConstraint(
                condition=models.Q(cached_prompt_tokens__lte=models.F("prompt_tokens")),
                name="message_cached_within_prompt",
            ),
            models.CheckConstraint(
                condition=models.Q(reasoning_tokens__lte=models.F("completion_tokens")),
                name="message_reasoning_within_completion",
            ),
            *non_negative("cost", model="message"),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.sequence}"


class Document(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=255)
    content = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title
