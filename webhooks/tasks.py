"""django-q2 task of outgoing webhooks: takes an id, idempotent."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import datetime, timedelta

import httpx
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import schedule

from core.outbound import Destination, DestinationRefused, DestinationUnresolved, destination_check, tls_context
from core.schedules import schedule_keep
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_payload

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 6
TIMEOUT_S = 10
UNSETTLED = (WebhookDelivery.Status.PENDING, WebhookDelivery.Status.RETRYING)
SWEEP_SCHEDULE_NAME = "chatter-webhooks-sweep"
SWEEP_BATCH = 500  # deliveries a sweep sends again; the next takes the rest
ANSWER_KEPT_BYTES = 1024  # of an answer outside 2xx, read for the attempt's log (its first 200 characters)


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """`X-Chatter-Signature`: sha256=HMAC-SHA256(secret, "<timestamp>." + body), hex. A receiver recomputes it over
    the raw body and the `X-Chatter-Timestamp` header (and refuses old timestamps, against replays)."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the n-th failed attempt: CHATTER_WEBHOOK_RETRY_S, doubled each time (1×, 2×, 4×, …)."""
    return timedelta(seconds=settings.CHATTER_WEBHOOK_RETRY_S * 2 ** (attempts - 1))


def _post(url: str, *, body: bytes, headers: dict) -> tuple[int, str]:
    """POST to the address the URL's host was checked at (never resolved again, so never another one), with the
    URL's name as Host and, for https, as SNI and the name the certificate must carry. Redirects are not followed,
    and no proxy or .netrc from the environment is used (trust_env=False): the checked address is the peer.
    The whole attempt (resolving, connecting, sending, the receiver's answer) takes at most TIMEOUT_S: httpx's
    timeouts bound each read, which a receiver answering a byte at a time would renew for ever; past it,
    TimeoutError."""
    deadline = time.monotonic() + TIMEOUT_S
    destination = destination_check(url)
    try:
        return async_to_sync(_post_within)(destination, body=body, headers=headers, deadline=deadline)
    except TimeoutError:
        raise TimeoutError(f"no answer within {TIMEOUT_S} s") from None


async def _post_within(destination: Destination, *, body: bytes, headers: dict, deadline: float) -> tuple[int, str]:
    """The POST, its answer streamed: a 2xx's body is not read, another's at most ANSWER_KEPT_BYTES, as sent
    (identity: a compressed answer could grow a thousandfold as it is read), then the connection is closed."""
    extensions = {"sni_hostname": destination.sni_hostname} if destination.sni_hostname else {}
    async with asyncio.timeout(deadline - time.monotonic()), httpx.AsyncClient(
            timeout=TIMEOUT_S, follow_redirects=False, trust_env=False, verify=tls_context()) as client:
        async with client.stream("POST", destination.url, content=body, extensions=extensions, headers={
                **headers, "Host": destination.host, "Accept-Encoding": "identity"}) as response:
            if 200 <= response.status_code < 300:
                return response.status_code, ""
            kept = b""
            async for chunk in response.aiter_raw():
                kept += chunk[:ANSWER_KEPT_BYTES - len(kept)]
                if len(kept) >= ANSWER_KEPT_BYTES:
                    break
    text = kept.decode(response.encoding or "utf-8", errors="replace")
    return response.status_code, f"HTTP {response.status_code}: {text[:200]}"


def webhook_deliver(delivery_id: str) -> str:
    """One attempt to deliver; a failure (an error, or a status outside 2xx) schedules the next after a backoff,
    until MAX_ATTEMPTS. A destination that is not allowed (core.outbound) fails the delivery at once, as does one
    whose subject is gone before its payload was made (webhooks.services.webhook_payload). Every attempt is logged
    on the delivery (the admin shows it)."""
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None or delivery.status in (WebhookDelivery.Status.DELIVERED, WebhookDelivery.Status.FAILED):
        return "nothing to do"
    payload = webhook_payload(delivery)
    if payload is None:
        return _attempt_logged(delivery.pk, code=None, error=f"refused: its {delivery.subject_type} is gone",
                               final=True)
    body = json.dumps({"id": str(delivery.pk), **payload}, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": "Chatter-Webhooks/1",
               "X-Chatter-Event": delivery.event, "X-Chatter-Delivery": str(delivery.pk), "X-Chatter-Timestamp": timestamp,
               "X-Chatter-Signature": webhook_signature(secret=settings.CHATTER_WEBHOOK_SECRET, timestamp=timestamp,
                                                        body=body)}
    headers.update({name: value for name, value in (delivery.trace_context or {}).items()
                    if name in ("traceparent", "tracestate")})  # the trace it was created in goes on (core.tracing)
    code, error, refused = None, "", False
    try:
        code, error = _post(delivery.url, body=body, headers=headers)
    except DestinationRefused as exc:
        error, refused = f"refused: {exc}"[:500], True
    except (DestinationUnresolved, httpx.HTTPError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    return _attempt_logged(delivery.pk, code=code, error=error, final=refused,
                           payload=payload if not delivery.payload else None)


def _attempt_logged(delivery_id, *, code: int | None, error: str, final: bool = False, payload: dict | None = None,
                    lost_before: datetime | None = None) -> str:
    """Log an attempt on the delivery and, failed, schedule the next after its backoff, or, `final` (a refused
    destination stays refused) or out of attempts, fail it. `payload`: the one it was made for it, kept for its
    next attempts. `lost_before` (the sweep): only while its attempt, due before then, has not reported (else "")."""
    now = timezone.now()
    with transaction.atomic():  # the attempt and its retry are logged together: a retrying delivery has its next
        # The row as it is now, locked: another attempt of the same delivery (a task delivered twice) may have
        # logged itself since this one read it.
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        if lost_before is not None and not _lost(delivery, before=lost_before):
            return ""  # it reported meanwhile: nothing logged
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = code, error
        delivery.log = [*delivery.log, {"at": now.isoformat(), "status_code": code, "error": error}]
        if payload is not None:
            delivery.payload = payload
        if delivery.status == WebhookDelivery.Status.DELIVERED:
            pass  # another attempt got through meanwhile: it stays delivered
        elif not error:
            delivery.status, delivery.delivered_at, delivery.next_attempt_at = (
                WebhookDelivery.Status.DELIVERED, now, None)
        elif final or delivery.attempts >= MAX_ATTEMPTS:
            delivery.status, delivery.next_attempt_at = WebhookDelivery.Status.FAILED, None
        else:
            delivery.status = WebhookDelivery.Status.RETRYING
            delivery.next_attempt_at = now + retry_delay(delivery.attempts)
        delivery.save(update_fields=["attempts", "last_status_code", "last_error", "log", "status", "delivered_at",
                                     "next_attempt_at", *(["payload"] if payload is not None else [])])
        if delivery.status == WebhookDelivery.Status.RETRYING:
            schedule("webhooks.tasks.webhook_deliver", str(delivery.pk),
                     name=f"webhook-{delivery.pk}-{delivery.attempts}", schedule_type=Schedule.ONCE,
                     next_run=delivery.next_attempt_at, repeats=1)
    if error:
        logger.warning("webhook delivery %s attempt %d failed: %s", delivery.pk, delivery.attempts, error)
    return delivery.status


def lost_after() -> timedelta:
    """How long past its due time an attempt that has not reported is lost: django-q2's `retry` (its task timeout +
    60 s), when its broker hands again a task a worker took and did not finish; by then a worker still on it was
    stopped at the task timeout. (A task queued behind busy workers may wait as long: it is not lost before.)"""
    return timedelta(seconds=settings.Q_CLUSTER["retry"])


def _lost(delivery: WebhookDelivery, *, before: datetime) -> bool:
    due = delivery.next_attempt_at or delivery.created_at  # (a pending one written before its first was kept)
    return delivery.status in UNSETTLED and due < before


def webhook_deliveries_resume(*, now: datetime | None = None) -> int:
    """Every minute (`chatter-webhooks-sweep`): the deliveries whose attempt was due longer than lost_after() ago
    and has not reported (its task was lost: the process that was to queue it stopped after the commit that wrote
    it, its worker died or was stopped at its task timeout) count that attempt failed, "lost" in their log, and
    are retried after their backoff as after any failed attempt, or failed once out of attempts. Returns how many."""
    lost_before = (now or timezone.now()) - lost_after()
    lost = WebhookDelivery.objects.filter(status__in=UNSETTLED).filter(
        Q(next_attempt_at__lt=lost_before) | Q(next_attempt_at__isnull=True, created_at__lt=lost_before))
    error = f"lost: its attempt did not report within {int(lost_after().total_seconds())} s of its due time"
    resumed = 0
    for delivery_id in lost.order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH]:
        resumed += bool(_attempt_logged(delivery_id, code=None, error=error, lost_before=lost_before))
    return resumed


def webhook_sweep_task() -> int:
    """Every minute (`chatter-webhooks-sweep`, webhooks.apps): webhook_deliveries_resume."""
    return webhook_deliveries_resume()


def webhook_sweep_ensure() -> None:
    """The django-q2 schedule of the sweep of lost deliveries, every minute (kept by name)."""
    schedule_keep(SWEEP_SCHEDULE_NAME, func="webhooks.tasks.webhook_sweep_task", schedule_type=Schedule.MINUTES,
                  minutes=1, repeats=-1)
