"""API keys (the ApiToken table): made with a high-entropy key that is returned once and stored only as its
SHA-256, and looked up by that digest (an index lookup on the hash: nothing is compared against the key itself, so
the time a lookup takes says nothing about any stored key). A revoked or expired key is refused by the lookup
itself, so at once, in every process."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from core.cache import hot_reads
from keys.models import API_KEY_SCOPES, ApiToken
from keys.signals import api_key_changed

KEY_BYTES = 32  # 256 random bits: a fast hash is enough, no key can be guessed
MAX_KEY_CHARS = 128  # longer is no key of ours: refused before hashing
# last_used_at is written at most this often per key (one conditional UPDATE), not on every request.
LAST_USED_EVERY = timedelta(minutes=1)


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user, name: str = "", scopes: list[str] | None = None,
                     expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new key for `user` and the key itself: the only time it exists outside its holder. Every scope unless
    `scopes` says otherwise."""
    key = secrets.token_urlsafe(KEY_BYTES)
    token = ApiToken.objects.create(
        user=user, digest=token_digest(key), prefix=key[:8], name=name,
        scopes=[scope for scope in API_KEY_SCOPES if scope in (API_KEY_SCOPES if scopes is None else scopes)],
        expires_at=expires_at)
    return token, key


def api_key_create(*, user, name: str, scopes: list[str], expires_at: datetime | None = None,
                   ip: str | None = None) -> tuple[ApiToken, str]:
    """A named key made over the API, audited (`api_key.created`) in the same transaction."""
    with transaction.atomic():
        token, key = api_token_create(user=user, name=name, scopes=scopes, expires_at=expires_at)
        api_key_changed.send(sender=ApiToken, action="api_key.created", token=token, actor=user, ip=ip)
    return token, key


def api_key_revoke(*, token: ApiToken, actor, ip: str | None = None) -> ApiToken:
    """Revoke a key: refused from the next request on. Revoking a revoked key changes nothing."""
    now = timezone.now()
    with transaction.atomic():
        if ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
            token.revoked_at = now
            api_key_changed.send(sender=ApiToken, action="api_key.revoked", token=token, actor=actor, ip=ip)
        else:
            token.refresh_from_db(fields=["revoked_at"])
    return token


def api_key_list(*, user) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def api_token_get(*, key: str) -> ApiToken | None:
    """The live key (with its user) that `key` is, or None: unknown, revoked or expired."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    digest, now = token_digest(key), timezone.now()
    token = hot_reads.get(("api_key", digest), lambda: _key_live(digest=digest, now=now), related=("user",))
    if token is None or (token.expires_at is not None and token.expires_at <= now):
        return None
    return token


def _key_live(*, digest: str, now) -> ApiToken | None:
    """One statement: the key's row and its user's."""
    found = ApiToken.objects.select_related("user").filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now), digest=digest, revoked_at__isnull=True)[:1]
    return next(iter(found), None)


def access_live(*, user_id, key_uid: str | None) -> bool:
    """Whether a connection that authenticated as `user_id`, with the key whose uid is `key_uid` (None: a login
    session), may go on: its user active, its key neither revoked nor deleted (its expiry is known to the connection:
    workflows.realtime.access_ended). Read through the memo of hot reads: a statement only after keys or users
    changed, in any process."""
    return hot_reads.get(("access_live", user_id, key_uid), lambda: _access_live(user_id=user_id, key_uid=key_uid))


def _access_live(*, user_id, key_uid: str | None) -> bool:
    if key_uid is None:
        return get_user_model().objects.filter(pk=user_id, is_active=True).exists()
    return ApiToken.objects.filter(uid=key_uid, user_id=user_id, user__is_active=True, revoked_at__isnull=True).exists()


# Per process: a key's digest -> (its last use as its row said, the use this process wrote over it). Each request's
# key is its own copy of the memo's (core.cache.hot_reads), so the memo never sees the write; this does, until the row
# changes.
_noted: dict[str, tuple[datetime | None, datetime]] = {}
_NOTED_MAX = 10_000  # past it, the process starts over (one conditional UPDATE more per key)


def api_token_touch(*, token: ApiToken) -> None:
    """Note that `token` was used: one conditional UPDATE at most once a LAST_USED_EVERY per key (of several
    requests at once, one writes), and no statement at all when the key was noted less than that ago."""
    now, read = timezone.now(), token.last_used_at
    noted = _noted.get(token.digest)
    last = noted[1] if noted is not None and noted[0] == read else read
    if last is not None and now - last < LAST_USED_EVERY:
        return
    ApiToken.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY),
                            pk=token.pk).update(last_used_at=now)  # (renews no memo: core.cache.RenewsHotReads)
    token.last_used_at = now
    if len(_noted) >= _NOTED_MAX:
        _noted.clear()
    _noted[token.digest] = (read, now)
