"""The one rule that keeps secrets out of what people read: the forms a secret may take in text (secret_forms) and
their replacement by "[redacted]" wherever one occurs (secrets_scrub), in text or through a JSON value, its keys
too (secrets_scrubbed). Its users hand it their secrets: the engine's errors the configured ones (errors), the
audit trail's data the same (audit.services, in its own one walk that also makes the data plain JSON), an MCP
server's answers and its stored tool calls that server's header and environment values (tools)."""
from __future__ import annotations

import base64
import binascii
import functools
import re
from urllib.parse import quote

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4  # a shorter value would match ordinary text everywhere: it is no secret
# An Authorization value: its scheme, then the credential, which text may quote without the scheme.
_SCHEMED = re.compile(r"(basic|bearer|token|apikey|api-key|key)\s+(\S+)", re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def secret_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form in which text may carry `secrets`, longest first (a secret that holds another is replaced
    whole): each value; an Authorization value's credential without its scheme ("Bearer <token>": the token), a
    Basic credential decoded too ("user:password", and the password); each of these URL-encoded (as a query
    string or a URL quoting it carries it). A form shorter than MIN_SECRET_LENGTH is none."""
    forms = set()
    for secret in secrets:
        for form in _forms(secret):
            if len(form) >= MIN_SECRET_LENGTH:
                forms.update((form, quote(form, safe="")))
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def _forms(secret: str) -> list[str]:
    forms = [secret]
    schemed = _SCHEMED.fullmatch(secret.strip())
    if schemed is None:
        return forms
    scheme, credential = schemed.groups()
    forms.append(credential)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return forms
        forms += [decoded, decoded.partition(":")[2]]
    return forms


def secrets_scrub(text: str, forms: tuple[str, ...]) -> str:
    """`text` with every one of `forms` (secret_forms) replaced by "[redacted]"."""
    for form in forms:  # (a loop: the usual text holds none, and `in` is the quickest test of that)
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def secrets_scrubbed(value, forms: tuple[str, ...]):
    """`value` (JSON-like: dicts, lists, tuples, strings, numbers) with secrets_scrub applied to every string in it,
    the keys of its dicts too; a tuple becomes a list, as JSON has it."""
    if isinstance(value, str):
        return secrets_scrub(value, forms)
    if isinstance(value, dict):
        return {secrets_scrubbed(key, forms): secrets_scrubbed(item, forms) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [secrets_scrubbed(item, forms) for item in value]
    return value
