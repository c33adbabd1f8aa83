"""The configured secrets, and the one function that takes them out of text meant for people (error messages
that reach responses, events, messages and logs). The audit trail's redaction uses the same list."""
from __future__ import annotations

from django.conf import settings

REDACTED = "[redacted]"
_MIN_SECRET_LENGTH = 4  # a shorter configured value would match ordinary text everywhere


def secrets_configured() -> tuple[str, ...]:
    """SECRET_KEY, the provider API keys, the database and mail passwords and the webhook secret, as far as they
    are set."""
    candidates = (settings.SECRET_KEY, getattr(settings, "OPENAI_API_KEY", None),
                  getattr(settings, "ANTHROPIC_API_KEY", None), settings.DATABASES["default"].get("PASSWORD"),
                  getattr(settings, "CHATTER_WEBHOOK_SECRET", None), getattr(settings, "EMAIL_HOST_PASSWORD", None))
    return tuple(str(value) for value in candidates if value and len(str(value)) >= _MIN_SECRET_LENGTH)


def secrets_scrub(text: str) -> str:
    """`text` with every configured secret replaced by "[redacted]" (a provider's error may quote our key)."""
    for secret in secrets_configured():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def secrets_scrubbed(value):
    """`value` (JSON-like: dicts, lists, strings) with secrets_scrub applied to every string in it."""
    if isinstance(value, str):
        return secrets_scrub(value)
    if isinstance(value, dict):
        return {key: secrets_scrubbed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [secrets_scrubbed(item) for item in value]
    return value
