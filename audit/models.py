from django.conf import settings
from django.db import models


class AppendOnlyError(Exception):
    """Audit rows are never changed or removed."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("audit events are append-only")

    def delete(self):
        raise AppendOnlyError("audit events are append-only")


class AuditFields(models.Model):
    """What an audit row records (the chain's rows and the queued ones alike): when, the action, on what, in which
    request, from where, and its data."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    ip = models.GenericIPAddressField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True


class AuditEvent(AuditFields):
    class ActorType(models.TextChoices):
        USER = "user"
        SYSTEM = "system"
        SCHEDULE = "schedule"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                              db_constraint=False, related_name="+")
    actor_type = models.CharField(max_length=16, choices=ActorType.choices, default=ActorType.SYSTEM)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["action"]), models.Index(fields=["target_type", "target_id"]),
                   models.Index(fields=["correlation_id"])]
        # A row has at most one successor: the database itself refuses a fork of the chain.
        constraints = [models.UniqueConstraint(fields=["prev_hash"], name="audit_event_one_successor")]

    def __str__(self) -> str:
        return f"#{self.id} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events are append-only")


class AccessDeniedWindow(models.Model):
    """Refusals of unauthenticated clients counted per source address, status and minute, until the minute is
    over; then one `access.denied` row carries the count and the window is deleted (audit.services). Not part of
    the chain: an anonymous flood must not append a hash-chained row per request."""

    source = models.CharField(max_length=45, blank=True, default="")  # normalized IP address, "" when unknown
    status = models.PositiveIntegerField()
    window_start = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0)
    first_method = models.CharField(max_length=16)
    first_path = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "status", "window_start"],
                                               name="access_denied_window_one_per_key")]
        indexes = [models.Index(fields=["window_start"])]

    def __str__(self) -> str:
        return f"{self.source or '?'} {self.status} ×{self.count} from {self.window_start:%H:%M}"


class PendingAuditEvent(AuditFields):
    """A run's row waiting for the chain (audit.services.audit_queue): committed with the action it records, and
    moved into the chain, in id order, by the next writer that holds it (the process's chainer, right after the
    run commits). PostgreSQL only (SQLite's writers already take turns, so nothing waits there and nothing is
    queued)."""

    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_type = models.CharField(max_length=16)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"pending #{self.id} {self.action}"
