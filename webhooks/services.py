"""Writes of outgoing webhooks: the one way Chatter POSTs to a URL (budget alerts, the end of a run)."""
from __future__ import annotations

import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from core.errors import InvalidInput
from core.outbound import DestinationRefused, destination_check
from core.tracing import current_trace_context
from webhooks.models import WebhookDelivery
from webhooks.statements import delivery_insert

MAX_URL_CHARS = 500


def webhook_url_check(*, url, path: str = "webhook") -> None:
    """A webhook must be an http(s) URL to an allowed destination (core.outbound: public, or in the
    operator's allowed networks; no credentials in it), and deliveries must be signable: CHATTER_WEBHOOK_SECRET
    set. InvalidInput (naming `path`) otherwise, before anything is written."""
    if not settings.CHATTER_WEBHOOK_SECRET:
        raise InvalidInput("webhooks need CHATTER_WEBHOOK_SECRET (their signing secret) to be set", details=[
            {"path": path, "code": "webhooks_off", "message": "set CHATTER_WEBHOOK_SECRET to use webhooks"}])
    try:
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            raise ValidationError("too long")
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise InvalidInput(f"{path} must be an http or https URL", details=[
            {"path": path, "code": "invalid_url", "message": f"an http(s) URL of at most {MAX_URL_CHARS} characters"}
        ]) from None
    try:
        destination_check(url, unresolved_ok=True)
    except DestinationRefused as refused:
        raise InvalidInput(f"{path} is not an allowed webhook destination", details=[
            {"path": path, "code": "forbidden_destination", "message": str(refused)}]) from None


def webhook_delivery_create(*, subject_type: str, subject_id: str, url: str, event: str,
                            payload: dict) -> WebhookDelivery:
    """Log a delivery, in the caller's transaction, and, once that commits, hand it to a django-q2 task
    (webhooks.tasks.webhook_deliver), which signs and sends it and retries it with backoff. `payload` must be JSON
    (the delivery's `id` is added to it)."""
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(subject_type=subject_type, subject_id=str(subject_id), url=url,
                                              event=event, payload=payload, trace_context=current_trace_context(),
                                              next_attempt_at=now)
    webhook_delivery_send(delivery_id=delivery.pk)
    return delivery


def webhook_delivery_written(*, delivery_id: uuid.UUID, subject_type: str, subject_id: str, url: str,
                             event: str) -> tuple[str, list]:
    """The statement that logs a delivery whose payload is made as it is first sent, by its event's builder
    (webhook_payload_register), to ride on the last write of the caller's transaction (a run's end): the
    transaction that makes it due writes it, so no process stopping after its commit loses it. The caller hands it
    to the task with webhook_delivery_send."""
    now = timezone.now()
    return delivery_insert.bound([{
        "id": delivery_id, "subject_type": subject_type, "subject_id": str(subject_id), "url": url, "event": event,
        "payload": {}, "status": WebhookDelivery.Status.PENDING, "attempts": 0, "last_status_code": None,
        "last_error": "", "log": [], "next_attempt_at": now, "trace_context": current_trace_context(),
        "delivered_at": None, "created_at": now}])


def webhook_delivery_send(*, delivery_id: uuid.UUID) -> None:
    """Once the caller's transaction commits (at once outside one), hand the delivery to its task. A task lost (the
    process stopped before, a worker died) is not the delivery's end: the sweep sends it again
    (webhooks.tasks.webhook_deliveries_resume)."""
    delivery_id = str(delivery_id)
    transaction.on_commit(lambda: async_task("webhooks.tasks.webhook_deliver", delivery_id,
                                             task_name=f"webhook-{delivery_id}", group="webhooks"))


PayloadBuilder = Callable[[str], "dict | None"]
_payload_builders: dict[str, PayloadBuilder] = {}


def webhook_payload_register(*, event: str, build: PayloadBuilder) -> None:
    """Make `build(subject_id)` what makes the payload of the `event` deliveries written without one
    (webhook_delivery_written): JSON, or None when its subject is gone. The app that owns the subject registers it
    as it starts (webhooks imports none of them)."""
    _payload_builders[event] = build


def webhook_payload(delivery: WebhookDelivery) -> dict | None:
    """What the delivery sends: its payload, or, written without one, what its event's builder makes of its subject
    now (None: its subject is gone, or no builder makes it)."""
    if delivery.payload:
        return delivery.payload
    build = _payload_builders.get(delivery.event)
    return build(delivery.subject_id) if build is not None else None
