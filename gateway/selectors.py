"""Reads of the gateway's own rows."""
from __future__ import annotations

from core.errors import NotFound
from gateway.models import KeyLimits
from keys.models import ApiToken


def key_for_limits_get(*, user, uid) -> ApiToken:
    """The key whose gateway limits the user may manage: their own, or any for staff; another user's is a 404."""
    keys = ApiToken.objects.all() if user.is_staff else ApiToken.objects.filter(user=user)
    key = keys.filter(uid=uid).first()
    if key is None:
        raise NotFound("API key not found")
    return key


def key_limits_get(*, api_key: ApiToken) -> KeyLimits | None:
    return KeyLimits.objects.filter(api_key=api_key).first()
