"""Request parsers that refuse oversized, absurdly nested or non-UTF-8 bodies before any view sees them (SPEC §7).

Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE (= CHATTER_MAX_REQUEST_BYTES) when DRF reads it (the
error handler makes that a 413); the parsers also read at most that many bytes from whatever stream they are
given, so no path parses more."""
from __future__ import annotations

import json

from django.conf import settings
from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from core.errors import PayloadTooLarge


def body_read(stream) -> bytes:
    limit = settings.CHATTER_MAX_REQUEST_BYTES
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes",
                              details=[{"path": "", "code": "max_bytes", "message": str(limit)}])
    return raw


def json_check(value, *, depth_limit: int) -> None:
    """Refuse what no field may hold and no database can store: nesting deeper than the limit, NUL characters
    (PostgreSQL text and jsonb reject them) and lone surrogates (not encodable as UTF-8), in keys or values.
    Iterative, so a hostile document cannot exhaust the stack here either."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > depth_limit:
            raise ParseError(f"JSON nested deeper than {depth_limit} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _text_check(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _text_check(item)


def _text_check(text: str) -> None:
    if "\x00" in text:
        raise ParseError("JSON strings may not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError("JSON strings may not contain lone surrogate characters") from None


def json_parse(raw: bytes):
    """A JSON body as every surface reads it (/api/v1/ and /v1/ through JSONParser, /langgraph/ directly): UTF-8,
    no NaN or Infinity, no key twice, then json_check. ParseError says what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise ParseError("JSON body is not valid UTF-8") from None
    except RecursionError:
        raise ParseError(f"JSON nested deeper than {settings.CHATTER_MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ParseError(f"JSON parse error - {exc}") from None
    json_check(data, depth_limit=settings.CHATTER_MAX_JSON_DEPTH)
    return data


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return json_parse(body_read(stream))


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        return QueryDict(body_read(stream), encoding=encoding)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object naming a key twice is refused: which of the two a client meant is not ours to guess."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"duplicate key {twice!r}")
    return data
