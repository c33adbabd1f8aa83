"""Per-key control of model calls (docs/api/gateway.md#per-key-control): a key's allowed models, and its requests and
tokens per minute, in all and per model (gateway.models.KeyLimits). They bind every run the key starts, on every
surface (gateway.receivers, when a run is written) and the gateway's calls (key_admit, before the run, whose answer
carries the x-ratelimit-* headers). Counted in one-minute windows in the shared cache: a request when it is let in,
its tokens when its run ends; if the cache cannot be reached the limits are not enforced (logged).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db import transaction
from rest_framework.exceptions import Throttled

from audit.services import audit_record
from core.cache import hot_reads
from core.errors import Forbidden, InvalidInput
from core.models import INT_MAX
from gateway.models import KeyLimits

logger = logging.getLogger(__name__)

WINDOW_S = 60


class KeyRateLimited(Throttled):
    """A key past one of its limits: 429 with Retry-After, and the x-ratelimit-* headers (response_headers, which the
    one error path sends with the answer)."""

    def __init__(self, *, wait: float, message: str, headers: dict[str, str]):
        super().__init__(wait=wait, detail=message, code="rate_limit_exceeded")
        self.response_headers = headers


def key_limits_set(*, api_key, allowed_models: list[str] | None = None, rpm: int | None = None,
                   tpm: int | None = None, per_model: dict | None = None, actor=None, ip: str | None = None) -> KeyLimits:
    """Set (replace) a key's gateway limits, audited. `actor`: the user setting them (None: an operator, from the
    shell); limits staff set are changed by staff only."""
    errors = []
    if not isinstance(allowed_models or [], list) or not all(isinstance(m, str) and m for m in allowed_models or []):
        errors.append({"path": "allowed_models", "code": "invalid", "message": "a list of model names"})
    for path, value in [("rpm", rpm), ("tpm", tpm), *(
            (f"per_model.{model}.{name}", value) for model, limits in (per_model or {}).items()
            for name, value in (limits.items() if isinstance(limits, dict) else [("", "?")]))]:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT_MAX
                                  or path.rsplit(".", 1)[-1] not in ("rpm", "tpm")):
            errors.append({"path": path, "code": "invalid",
                           "message": f"rpm or tpm, a whole number from 1 to {INT_MAX}"})
    if errors:
        raise InvalidInput("invalid key limits", details=errors)
    values = {"allowed_models": allowed_models or [], "rpm": rpm, "tpm": tpm, "per_model": per_model or {}}
    with transaction.atomic():
        _changeable_by(api_key, actor)
        limits, _ = KeyLimits.objects.update_or_create(api_key=api_key, defaults={
            **values, "set_by_staff": actor is None or actor.is_staff})
        audit_record(action="api_key.limits_set", actor=actor, target=api_key, ip=ip,
                     data={"prefix": api_key.prefix, **values})
    return limits


def key_limits_remove(*, api_key, actor=None, ip: str | None = None) -> bool:
    """Remove a key's gateway limits (it may then call any model, unlimited), audited; whether it had any."""
    with transaction.atomic():
        _changeable_by(api_key, actor)
        removed, _ = KeyLimits.objects.filter(api_key=api_key).delete()
        if removed:
            audit_record(action="api_key.limits_removed", actor=actor, target=api_key, ip=ip,
                         data={"prefix": api_key.prefix})
    return bool(removed)


def _changeable_by(api_key, actor) -> None:
    """Limits staff set are not the key owner's to change (read under the row's lock, with the change after)."""
    if actor is None or actor.is_staff:
        return
    if KeyLimits.objects.select_for_update().filter(api_key=api_key, set_by_staff=True).exists():
        raise Forbidden("this key's gateway limits were set by staff: only staff may change them",
                        code="set_by_staff")


def key_limits_of(api_key_id: int | None) -> KeyLimits | None:
    """The key's limits, from the process's memo of hot reads (core.cache.hot_reads: a change of any key's limits
    is seen by every process at its next call)."""
    if api_key_id is None:
        return None
    limits = hot_reads.get(("key_limits", api_key_id),
                           lambda: KeyLimits.objects.filter(api_key_id=api_key_id).first() or _NONE)
    return None if limits is _NONE else limits


_NONE = object()  # a key without limits (kept in the memo: the memo keeps no None)


def key_models_allowed(api_key) -> frozenset[str] | None:
    """The models `api_key` may call, or None for any (no key, or a key without `allowed_models`)."""
    limits = key_limits_of(api_key.pk if api_key is not None else None)
    return frozenset(limits.allowed_models) if limits is not None and limits.allowed_models else None


@dataclass(frozen=True)
class _Window:
    scope: str  # "key" or "model <name>"
    rpm: int | None
    tpm: int | None
    requests_key: str
    tokens_key: str


def _windows(limits: KeyLimits, model: str, *, at: float) -> list[_Window]:
    window = int(at // WINDOW_S)
    own = limits.per_model.get(model) or {}
    scopes = [("key", "", limits.rpm, limits.tpm), (f"model {model}", model, own.get("rpm"), own.get("tpm"))]
    return [_Window(scope, rpm, tpm, f"gateway:rpm:{limits.api_key_id}:{name}:{window}",
                    f"gateway:tpm:{limits.api_key_id}:{name}:{window}")
            for scope, name, rpm, tpm in scopes if rpm or tpm]


def key_admit(*, api_key, model: str) -> dict[str, str]:
    """Let a call of `model` by `api_key` in, counting it, or refuse it (Forbidden, KeyRateLimited). Returns the
    x-ratelimit-* headers of the tightest limit that applies ({} when none does)."""
    limits = key_limits_of(api_key.pk if api_key is not None else None)
    if limits is None:
        return {}
    _model_allowed(limits, model)
    now = time.time()
    windows = _windows(limits, model, at=now)
    if not windows:
        return {}
    reset_s = WINDOW_S - now % WINDOW_S
    try:
        tokens = cache.get_many([w.tokens_key for w in windows if w.tpm])
        requests = {}
        for w in windows:
            if w.rpm:
                cache.add(w.requests_key, 0, timeout=WINDOW_S * 2)
                requests[w.requests_key] = cache.incr(w.requests_key)
    except Exception:  # noqa: BLE001 - a cache outage does not stop calls
        logger.warning("gateway key limits not enforced: the shared cache failed", exc_info=True)
        return {}
    headers, remaining = {}, {}
    for w in windows:
        if w.rpm:
            left = w.rpm - requests[w.requests_key]
            if left < 0:
                raise KeyRateLimited(wait=math.ceil(reset_s), headers=_headers(w.rpm, 0, reset_s, "requests"),
                                     message=f"Rate limit reached for {w.scope}: {w.rpm} requests per minute.")
            if left < remaining.get("requests", (math.inf,))[0]:
                remaining["requests"] = (left, w.rpm)
        if w.tpm:
            left = w.tpm - (tokens.get(w.tokens_key) or 0)
            if left <= 0:
                raise KeyRateLimited(wait=math.ceil(reset_s), headers=_headers(w.tpm, 0, reset_s, "tokens"),
                                     message=f"Rate limit reached for {w.scope}: {w.tpm} tokens per minute.")
            if left < remaining.get("tokens", (math.inf,))[0]:
                remaining["tokens"] = (left, w.tpm)
    for kind, (left, limit) in remaining.items():
        headers.update(_headers(limit, left, reset_s, kind))
    return headers


def _model_allowed(limits: KeyLimits, model: str) -> None:
    if limits.allowed_models and model not in limits.allowed_models:
        raise Forbidden(f"This key may not call the model `{model}`; it may call: {', '.join(limits.allowed_models)}.",
                        code="model_not_allowed",
                        details=[{"path": "model", "code": "model_not_allowed", "message": "not allowed for this key"}])


def key_run_admit(*, api_key, model: str, models: list[str]) -> None:
    """Let a run started with `api_key` (on any surface) in, or refuse it as a gateway call is refused: every
    model it may call (`models`) must be one the key may call, and the run counts as one request of its `model`
    against the key's requests and tokens per minute."""
    limits = key_limits_of(api_key.pk)
    if limits is None:
        return
    for name in models:
        _model_allowed(limits, name)
    key_admit(api_key=api_key, model=model)


def _headers(limit: int, remaining: int, reset_s: float, kind: str) -> dict[str, str]:
    return {f"x-ratelimit-limit-{kind}": str(limit), f"x-ratelimit-remaining-{kind}": str(max(remaining, 0)),
            f"x-ratelimit-reset-{kind}": f"{reset_s:.3f}s"}


def key_tokens_count(*, api_key_id: int | None, model: str, tokens: int) -> None:
    """Count a finished call's tokens against its key's token limits, once its run has committed."""
    limits = key_limits_of(api_key_id)
    if not tokens or limits is None:
        return
    windows = [window for window in _windows(limits, model, at=time.time()) if window.tpm]

    def count() -> None:
        try:
            for window in windows:
                cache.add(window.tokens_key, 0, timeout=WINDOW_S * 2)
                cache.incr(window.tokens_key, tokens)
        except Exception:  # noqa: BLE001 - a cache outage does not stop calls
            logger.warning("gateway key limits: tokens not counted, the shared cache failed", exc_info=True)

    if windows:
        transaction.on_commit(count)
