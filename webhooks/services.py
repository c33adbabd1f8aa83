"""Writes of outgoing webhooks: the one way Chatter POSTs to a URL (budget alerts, the end of a run)."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django_q.tasks import async_task

from core.errors import InvalidInput
from core.outbound import DestinationRefused, destination_check
from core.tracing import current_trace_context
from webhooks.models import WebhookDelivery

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
    """Log a delivery and, once that commits, hand it to a django-q2 task (webhooks.tasks.webhook_deliver), which
    signs and sends it and retries it with backoff. `payload` must be JSON (the delivery's `id` is added to it)."""
    delivery = WebhookDelivery.objects.create(subject_type=subject_type, subject_id=str(subject_id), url=url,
                                              event=event, payload=payload, trace_context=current_trace_context())
    delivery_id = str(delivery.pk)
    transaction.on_commit(lambda: async_task("webhooks.tasks.webhook_deliver", delivery_id,
                                             task_name=f"webhook-{delivery_id}", group="webhooks"))
    return delivery
