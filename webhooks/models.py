"""Outgoing webhooks: one row per delivery (a budget alert, a run's end, …) and what became of it. Plumbing: it
names what it is about by type and id (text), never by a foreign key, so every app may use it (docs/architecture.md)."""
import uuid

from django.db import models
from django.db.models import Q


class WebhookDelivery(models.Model):
    """One POST to a webhook and what became of it: each attempt (status code or error) and when the next one is
    due (retried with backoff by django-q2 until delivered or out of attempts)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RETRYING = "retrying"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # What the delivery is about, e.g. ("budget", <budget id>) or ("run", <execution id>).
    subject_type = models.CharField(max_length=32)
    subject_id = models.CharField(max_length=64)
    url = models.URLField(max_length=500)
    event = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    log = models.JSONField(default=list, blank=True)  # [{"at", "status_code", "error"}] per attempt
    # When its next attempt is due (a pending one's first: when it was written); none once delivered or failed
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # With tracing on (core.tracing): the trace context it was created in (a run's: its span), sent with it as
    # traceparent/tracestate, so the receiver's work joins the trace
    trace_context = models.JSONField(default=dict, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["subject_type", "subject_id"]),
                   # what the sweep reads (webhooks.tasks.webhook_deliveries_resume): the few not settled yet
                   models.Index(fields=["next_attempt_at"], condition=Q(status__in=["pending", "retrying"]),
                                name="webhooks_delivery_unsettled")]

    def __str__(self) -> str:
        return f"{self.event} → {self.url} ({self.status}, {self.attempts} attempts)"
