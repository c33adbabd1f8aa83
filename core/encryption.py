"""Values kept encrypted at rest (an MCP server's headers: its bearer token, its API key): Fernet from
`cryptography` (AES-128-CBC with an HMAC-SHA256, a timestamp, URL-safe text), so a copy of the database or a backup
does not hold them readable.

Keys: CHATTER_ENCRYPTION_KEYS (Fernet keys, comma-separated; the first encrypts, every one decrypts, so a key is
rotated by putting a new one first), then a key derived from SECRET_KEY (HKDF-SHA256), which is all there is when
none is set and still decrypts what was written before keys were set."""
from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_DERIVED_KEY_INFO = b"chatter encryption at rest v1"


class SecretUndecryptable(Exception):
    """The stored value was not encrypted with any configured key (a key was dropped), or was altered."""


def secret_encrypt(text: str) -> str:
    return _keys(tuple(settings.CHATTER_ENCRYPTION_KEYS), settings.SECRET_KEY).encrypt(text.encode()).decode()


def secret_decrypt(token: str) -> str:
    try:
        return _keys(tuple(settings.CHATTER_ENCRYPTION_KEYS), settings.SECRET_KEY).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUndecryptable("an encrypted value could not be decrypted with the configured keys") from None


def derived_key(secret_key: str) -> bytes:
    """The Fernet key SECRET_KEY gives."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DERIVED_KEY_INFO).derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw)


@functools.lru_cache(maxsize=4)
def _keys(configured: tuple[str, ...], secret_key: str) -> MultiFernet:
    return MultiFernet([*(Fernet(key) for key in configured), Fernet(derived_key(secret_key))])
