"""API tokens: made with a high-entropy key that is returned once and stored only as its SHA-256, and looked up
by that digest (an index lookup on the hash: nothing is compared against the key itself, so the time a lookup
takes says nothing about any stored key)."""
from __future__ import annotations

import hashlib
import secrets

from chatter_project.models import ApiToken

KEY_BYTES = 32  # 256 random bits: a fast hash is enough, no key can be guessed
MAX_KEY_CHARS = 128  # longer is no key of ours: refused before hashing


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user) -> tuple[ApiToken, str]:
    """A new token for `user` and its key: the only time the key exists outside its holder."""
    key = secrets.token_urlsafe(KEY_BYTES)
    token = ApiToken.objects.create(user=user, digest=token_digest(key), prefix=key[:8])
    return token, key


def api_token_get(*, key: str) -> ApiToken | None:
    """The token (with its user) that `key` is the key of, or None."""
    if not key or len(key) > MAX_KEY_CHARS:
        return None
    return ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
