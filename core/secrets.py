"""The configured secrets: what no text meant for people may show (error messages that reach responses, events,
messages and logs: the engine's errors scrub them, engine.errors.secrets_scrub, handed this list by
workflows.engine_setup). The audit trail's redaction uses the same list, in every form of each (secrets_configured).
The rule itself, the forms and their replacement, is engine.redaction's."""
from __future__ import annotations

import functools

from django.conf import settings

from engine.redaction import MIN_SECRET_LENGTH, REDACTED, secret_forms  # noqa: F401 - re-exported


def secrets_read() -> tuple[str, ...]:
    """SECRET_KEY, the provider API keys, the database and mail passwords and the webhook secret, as far as they
    are set, read from the settings now."""
    candidates = (settings.SECRET_KEY, getattr(settings, "OPENAI_API_KEY", None),
                  getattr(settings, "ANTHROPIC_API_KEY", None), settings.DATABASES["default"].get("PASSWORD"),
                  getattr(settings, "CHATTER_WEBHOOK_SECRET", None), getattr(settings, "EMAIL_HOST_PASSWORD", None))
    return tuple(str(value) for value in candidates if value and len(str(value)) >= MIN_SECRET_LENGTH)


@functools.cache
def secrets_configured() -> tuple[str, ...]:
    """Every form of secrets_read's answer (engine.redaction.secret_forms), kept (reading the settings takes about
    20 µs; the audit trail asks once a row) until a setting changes (secrets_forget)."""
    return secret_forms(secrets_read())


def secrets_forget(**kwargs) -> None:
    """The receiver of Django's `setting_changed` (core.apps): any setting may be one of the secrets."""
    secrets_configured.cache_clear()
