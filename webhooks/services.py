"""Writes of outgoing webhooks: the one way Chatter POSTs to a URL (budget alerts, the end of a run)."""
from __future__ import annotations

from django.db import transaction
from django_q.tasks import async_task

from webhooks.models import WebhookDelivery


def webhook_delivery_create(*, subject_type: str, subject_id: str, url: str, event: str,
                            payload: dict) -> WebhookDelivery:
    """Log a delivery and, once that commits, hand it to a django-q2 task (webhooks.tasks.webhook_deliver), which
    signs and sends it and retries it with backoff. `payload` must be JSON (the delivery's `id` is added to it)."""
    delivery = WebhookDelivery.objects.create(subject_type=subject_type, subject_id=str(subject_id), url=url,
                                              event=event, payload=payload)
    delivery_id = str(delivery.pk)
    transaction.on_commit(lambda: async_task("webhooks.tasks.webhook_deliver", delivery_id,
                                             task_name=f"webhook-{delivery_id}", group="webhooks"))
    return delivery
