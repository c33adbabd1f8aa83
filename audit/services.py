"""Writes of the audit trail (docs/architecture.md#i7): one append-only, hash-chained row per sensitive action.

Services call `audit_record` inside their own transaction, so the row commits or rolls back with the action.
Call it as late as possible in that transaction: from the call to the commit, every other audited write waits
(the chain has one head, so appends are serialized). Runs never touch the chain: `audit_queue` queues their rows in
the run's transaction; whoever holds the chain next appends the queue first, and the process's chainer
(audit.chainer) does so right after the run commits. Reads of the trail append the queue first
(audit_queue_flush).
"""
from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Model
from django.utils import timezone

from audit.chain import GENESIS_HASH, ip_normalize, row_hash
from audit.chainer import BUSY, CHAINED, NONE, Chainer
from audit.models import AccessDeniedWindow, AuditEvent
from audit.statements import (chain_head, chain_head_and_pending, chain_lock, chain_try_lock, events_insert,
                              pending_any, pending_insert, pending_insert_bound)
from core.db import text_storable
from core.schedules import schedule_keep
from core.secrets import REDACTED, secrets_configured
from engine.redaction import secrets_scrub

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key for the chain head ("audit" in ASCII); any fixed number no other code uses.
CHAIN_LOCK_KEY = 0x6175646974
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
# Key names whose values are secrets. Whole words, so "total_tokens" or "template_key" stay readable.
_SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "token", "authorization", "cookie", "cookies",
                 "apikey", "credential", "credentials", "sessionid", "csrftoken", "bearer"}
_SECRET_KEY_QUALIFIERS = {"api", "secret", "private", "access", "signing", "encryption", "session"}
_ACTOR_TYPES = frozenset(AuditEvent.ActorType.values)  # (Choices.values builds its list on every read)
# Anonymous refusals are counted per source, status and minute; a window is written this long after it ends, so
# a refusal counted at its last instant is in it (a later one would open a second row for the same minute).
ACCESS_DENIED_WINDOW = timedelta(minutes=1)
ACCESS_DENIED_GRACE_S = 5
ACCESS_DENIED_SCHEDULE_NAME = "chatter-audit-access-denied"


def audit_record(*, action: str, actor=None, actor_type: str | None = None, target: Model | None = None,
                 target_type: str = "", target_id: str = "", correlation_id: str = "", ip: str | None = None,
                 data: Mapping[str, Any] | None = None) -> AuditEvent:
    """Append one row to the chain, in the caller's transaction (or a new one when there is none)."""
    return audit_append([audit_fields(action=action, actor=actor, actor_type=actor_type, target=target,
                                      target_type=target_type, target_id=target_id, correlation_id=correlation_id,
                                      ip=ip, data=data)])[0]


def audit_fields(*, action: str, actor=None, actor_type: str | None = None, target: Model | None = None,
                 target_type: str = "", target_id: str = "", correlation_id: str = "", ip: str | None = None,
                 data: Mapping[str, Any] | None = None) -> dict:
    """The hashed fields of one row (all but created_at and prev_hash), checked and redacted.

    `actor` is a user (or None); `actor_type` defaults to "user" with an actor, else "system". `target` fills
    target_type (its model name) and target_id (its pk) unless they are given. `data` is redacted (secret-looking
    keys and configured secrets) and stored as plain JSON (Decimal, UUID and datetimes become strings).
    """
    if not isinstance(action, str) or len(action) > 64 or not _ACTION.match(action):
        raise ValueError(f"audit action must be dotted lowercase, like 'execution.started': {action!r}")
    if actor is not None and not actor.is_authenticated:
        actor = None  # an AnonymousUser is nobody
    actor_type = actor_type or (AuditEvent.ActorType.USER if actor is not None else AuditEvent.ActorType.SYSTEM)
    if actor_type not in _ACTOR_TYPES:
        raise ValueError(f"unknown audit actor_type {actor_type!r}")
    if target is not None:
        target_type = target_type or target._meta.model_name
        target_id = target_id or str(target.pk)
    return {
        "actor_id": actor.pk if actor is not None else None,
        "actor_type": str(actor_type),
        "action": action,
        "target_type": _text(target_type, 64),
        "target_id": _text(target_id, 64),
        "correlation_id": _text(correlation_id, 64),
        "ip": ip_normalize(ip),
        "data": redact(data or {}),
    }


def audit_append(rows: list[dict]) -> list[AuditEvent]:
    """Append prepared rows (the hashed fields but created_at and prev_hash) to the chain, in order, in the caller's
    transaction, waiting for the chain: one read of the head (and of the queue) and one INSERT, however many
    rows."""
    events = []
    for stored in _chain_append(rows):
        event = AuditEvent(**stored)
        event._state.adding = False  # stored, as save() leaves it (Model._state is documented)
        events.append(event)
    return events


def _chain_append(rows: list[dict]) -> list[dict]:
    """audit_append's work, its rows as stored (by column, with their ids), for callers that need no instances."""
    with transaction.atomic(savepoint=False):
        _chain_hold(wait=True)
        return _chain_extend(rows)


def audit_queue(rows: list[dict]) -> None:
    """A run's prepared rows, in the caller's transaction, without waiting for or holding the chain: on PostgreSQL
    they are queued (PendingAuditEvent) and, once the caller commits, the process's chainer appends them (or the
    next writer of the chain does, first); so concurrent runs never end one at a time, and a run's answer does not
    wait for the chain's lock, head and hashes. Elsewhere (SQLite, one writer at a time: nothing to wait for) they
    are appended at once."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        _chain_append(rows)
        return
    pending_insert(_queued(rows))
    transaction.on_commit(_chainer_wake)


def audit_queue_along(rows: list[dict]) -> tuple[str, list] | None:
    """audit_queue's statement for a caller that runs it with its own (core.db.statements_run): on PostgreSQL the
    INSERT that queues `rows`, after which the caller calls audit_queued; elsewhere None, and the caller calls
    audit_queue."""
    if not rows or connection.vendor != "postgresql":
        return None
    return pending_insert_bound(_queued(rows))


def _queued(rows: list[dict]) -> list[dict]:
    """Prepared rows as the queue stores them: each with the time it was queued (its time in the chain)."""
    return [{"created_at": timezone.now(), **fields} for fields in rows]


def audit_queued() -> None:
    """A caller's statement queued rows (audit_queue_along): the chainer is woken once it commits (at once, outside
    a transaction: a statement by itself, a gateway call's write, has committed when this is called)."""
    transaction.on_commit(_chainer_wake)


def audit_pending_chain() -> str:
    """Append the oldest queued rows to the chain in a transaction of their own, if the chain is free: BUSY
    (another writer holds it; it appends the queue, or its own rows, first), CHAINED (rows appended: call again),
    or NONE (held, and nothing was queued: every row committed before this call is in the chain)."""
    with transaction.atomic():
        if not _chain_hold(wait=False):
            return BUSY
        taken = _chain_extend([])
    return CHAINED if taken else NONE


def audit_queue_flush() -> int:
    """Append every queued row to the chain, waiting for it (a read or a check of the trail starts with this); the
    number appended."""
    if connection.vendor != "postgresql":  # nothing is queued there
        return 0
    appended = 0
    while True:
        with transaction.atomic():
            _chain_hold(wait=True)
            taken = _chain_extend([])
        if not taken:
            return appended
        appended += len(taken)


PENDING_TAKE_MOST = 500  # queued rows one holder appends; more wake the chainer again


def _chain_extend(rows: list[dict]) -> list[dict]:
    """Holding the chain: the queued rows (with their own times), then `rows`, in one INSERT. Returns the stored
    rows (by column, with their ids) of `rows` (or, with none, those taken off the queue)."""
    if connection.vendor == "postgresql":
        head, pending = chain_head_and_pending(PENDING_TAKE_MOST)
        if len(pending) == PENDING_TAKE_MOST:
            transaction.on_commit(_chainer_wake)
    else:
        head, pending = chain_head(), []
    prev_hash = head or GENESIS_HASH
    created_at = timezone.now()  # under the lock: times go backwards along the chain only by a queued row's wait
    stored = []
    for fields in [*pending, *({"created_at": created_at, **fields} for fields in rows)]:
        hashed = row_hash(prev_hash=prev_hash, **fields)
        stored.append({**fields, "prev_hash": prev_hash, "hash": hashed})
        prev_hash = hashed
    if stored:
        for row, pk in zip(stored, events_insert(stored), strict=True):
            row["id"] = pk
    return stored[len(pending):] if rows else stored


def _chainer_wake() -> None:
    chainer.wake()


def access_denied_record(*, user=None, ip: str | None, method: str, path: str, status: int) -> None:
    """`access.denied` for a refused request (401/403) or websocket (4401/4404), in its own transaction: the
    refusal stays on record though the request wrote nothing. A user's refusal is one row at once; refusals of
    unauthenticated clients are counted per source address, status and minute, and written as one row per
    window when it is over (access_denied_windows_close), so a flood cannot grow the chain a row per request.
    Never raises: the refusal itself must still be answered when the database cannot take the row (logged
    instead)."""
    try:
        if user is not None and user.is_authenticated:
            with transaction.atomic():
                audit_record(action="access.denied", actor=user, ip=ip,
                             data={"method": method, "path": path, "status": status})
        else:
            _access_denied_count(ip=ip, method=method, path=path, status=status)
    except DatabaseError:
        logger.exception("could not audit access.denied %s %s (%s)", method, path, status)


def _access_denied_count(*, ip: str | None, method: str, path: str, status: int) -> None:
    """One more anonymous refusal in its window: a conditional UPDATE of the window's counter, or the INSERT of a
    new window (a concurrent INSERT of the same one loses on the unique key, and counts by UPDATE instead)."""
    now = timezone.now()
    key = {"source": ip_normalize(ip) or "", "status": status,
           "window_start": now.replace(second=0, microsecond=0)}
    window = AccessDeniedWindow.objects.filter(**key)
    while not window.update(count=F("count") + 1):
        try:
            with transaction.atomic():
                AccessDeniedWindow.objects.create(**key, count=1, first_method=_text(redact(method), 16),
                                                  first_path=_text(redact(path), 200))
            return
        except IntegrityError:
            continue  # opened meanwhile by another request: count in it


def access_denied_windows_close(*, now: datetime | None = None, batch_size: int = 500) -> int:
    """Append one `access.denied` row for every window of anonymous refusals that ended ACCESS_DENIED_GRACE_S
    ago or more (actor none, the source as ip; data: status, count, window_start, window_end and the first
    refusal's method and path), and delete those windows, in the same transaction. Closers take the chain's
    turn first, so each window is written once. Returns the number of rows appended."""
    cutoff = (now or timezone.now()) - ACCESS_DENIED_WINDOW - timedelta(seconds=ACCESS_DENIED_GRACE_S)
    appended = 0
    while True:
        with transaction.atomic():
            _chain_hold(wait=True)
            windows = list(AccessDeniedWindow.objects.select_for_update().filter(window_start__lte=cutoff)
                           .order_by("window_start", "source", "status")[:batch_size])
            if not windows:
                return appended
            _chain_append([audit_fields(
                action="access.denied", ip=window.source or None,
                data={"status": window.status, "count": window.count, "window_start": window.window_start,
                      "window_end": window.window_start + ACCESS_DENIED_WINDOW,
                      "first_method": window.first_method, "first_path": window.first_path})
                for window in windows])
            AccessDeniedWindow.objects.filter(pk__in=[window.pk for window in windows]).delete()
        appended += len(windows)


def access_denied_schedule_ensure() -> None:
    """The django-q2 schedule that closes the windows of anonymous refusals every minute (kept by name)."""
    from django_q.models import Schedule

    schedule_keep(ACCESS_DENIED_SCHEDULE_NAME, func="audit.tasks.access_denied_windows_close_task",
                  schedule_type=Schedule.MINUTES, minutes=1, repeats=-1)


def redact(value: Any) -> Any:
    """A copy of `value` as plain JSON (`_scalar`), with the values of secret-looking keys (api_key, token,
    password, authorization, …, at any depth, any case) replaced by "[redacted]", and in every string, keys too,
    each configured secret (SECRET_KEY, provider API keys, the database password), in any of its forms, replaced as
    the engine's errors have it (engine.redaction): a value that is not JSON is stored as its text, redacted as any
    string is."""
    return _redacted(value, secrets_configured())


def _redacted(value: Any, forms: tuple[str, ...]) -> Any:
    kind = type(value)
    if kind is str:
        return secrets_scrub(text_storable(value), forms)
    if value is None or kind is int or kind is bool:
        return value
    if kind is dict or isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            key_text = secrets_scrub(text_storable(str(key)), forms)
            copy[key_text] = REDACTED if _is_secret_key(key_text) else _redacted(item, forms)
        return copy
    if kind is list or isinstance(value, (list, tuple, set, frozenset)):
        return [_redacted(item, forms) for item in value]
    if isinstance(value, (int, float, Decimal, date, time, uuid.UUID)):
        return _scalar(value)
    return secrets_scrub(_scalar(value), forms)  # a str subclass's or any other object's text (bytes: b'…')


@functools.lru_cache(maxsize=4096)  # a run's audit data has the same few keys every time
def _is_secret_key(name: str) -> bool:
    # camelCase and kebab-case to words: "X-Api-Key" and "xApiKey" → ["x", "api", "key"]
    words = [word for word in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if word]
    if not words:
        return False
    if _SECRET_WORDS.intersection(words):
        return True
    return words[-1] == "key" and (len(words) == 1 or words[-2] in _SECRET_KEY_QUALIFIERS)


def _chain_hold(*, wait: bool) -> bool:
    """Hold the chain until the caller's transaction ends (waiting for it, or only if it is free: False when
    another writer holds it), so two rows never link to the same predecessor (a fork).

    PostgreSQL: a transaction-level advisory lock; at READ COMMITTED (Django's default) the next statement then
    sees the previous writer's committed rows. SQLite: nothing to do, the settings open every transaction with
    BEGIN IMMEDIATE, which already takes the database's one write lock (and a deferred transaction could not fork
    either: its write would fail with SQLITE_BUSY).
    """
    if connection.vendor != "postgresql":
        return True
    if wait:
        chain_lock(CHAIN_LOCK_KEY)
        return True
    return chain_try_lock(CHAIN_LOCK_KEY)


def _text(value: Any, max_length: int) -> str:
    """A string PostgreSQL can store: no NUL, no lone surrogates, within the column."""
    return text_storable(str(value or ""))[:max_length]


def _scalar(value: Any) -> Any:
    """A value that is no dict or list as plain JSON that survives a round trip through jsonb unchanged, so the
    stored row hashes the same when it is read back: Decimal, UUID and times become strings, NaN and infinities
    too, anything else its text."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return text_storable(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if timezone.is_aware(value):
            value = value.astimezone(dt_timezone.utc)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return text_storable(str(value))


chainer = Chainer(any_queued=pending_any, chain_once=audit_pending_chain)  # this process's (audit.chainer)
os.register_at_fork(after_in_child=chainer.after_fork)
atexit.register(chainer.drain)
