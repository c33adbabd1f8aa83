"""Request parsers that refuse oversized, absurdly nested or non-UTF-8 bodies before any view sees them
(docs/api/rest.md). They read at most CHATTER_MAX_REQUEST_BYTES from whatever stream they are given, so no path
parses more (Django refuses a larger body too; the error handler makes that a 413).

The one exception is a file upload: a view that takes files lists MultiPartParser among its parsers and names the
setting of its largest file in `upload_limit_setting`; its multipart body may be that large plus
CHATTER_MAX_REQUEST_BYTES, the file going to Django's upload handlers, never into a parsed string.
"""
from __future__ import annotations

import json
import math

from django.conf import settings
from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from core.errors import PayloadTooLarge


def body_too_large(limit: int | None = None) -> PayloadTooLarge:
    """The 413 of a request body over `limit` bytes (CHATTER_MAX_REQUEST_BYTES by default), on every surface."""
    limit = settings.CHATTER_MAX_REQUEST_BYTES if limit is None else limit
    return PayloadTooLarge(f"request body larger than {limit} bytes",
                           details=[{"path": "", "code": "max_bytes", "message": str(limit)}])


def body_read(stream, limit: int | None = None) -> bytes:
    """The whole body, at most `limit` bytes (CHATTER_MAX_REQUEST_BYTES by default); PayloadTooLarge past it."""
    limit = settings.CHATTER_MAX_REQUEST_BYTES if limit is None else limit
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise body_too_large(limit)
    return raw


def upload_body_limit(view) -> int:
    """The most bytes a multipart body may have on `view`: its largest file (the setting its
    `upload_limit_setting` names) plus CHATTER_MAX_REQUEST_BYTES for the other fields; without one, the project's
    limit."""
    name = getattr(view, "upload_limit_setting", None)
    extra = getattr(settings, name) if name else 0
    return settings.CHATTER_MAX_REQUEST_BYTES + extra


class _BoundedStream:
    """A body read in chunks by Django's multipart parser, refused once more than `limit` bytes were read (a client
    whose Content-Length understated its body gets the same 413)."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.read_bytes = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(self.limit + 1 - self.read_bytes if size is None or size < 0 else size)
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise body_too_large(self.limit)
        return data


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
    no NaN or Infinity (neither written, nor a number past a float's range: 1e309), no key twice, then json_check.
    ParseError says what is wrong."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_number,
                          object_pairs_hook=_unique_keys)
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


class MultiPartParser(parsers.MultiPartParser):
    """multipart/form-data, for the views that take a file (see the module's docstring for its limit): refused
    by its declared length before anything is read, and by what is read."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = upload_body_limit(parser_context.get("view"))
        try:
            declared = int(parser_context["request"].META.get("CONTENT_LENGTH") or 0)
        except (KeyError, ValueError):
            declared = 0
        if declared > limit:
            raise body_too_large(limit)
        return super().parse(_BoundedStream(stream, limit) if stream is not None else stream, media_type,
                             parser_context)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is past the range of a number")
    return number


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """An object naming a key twice is refused: which of the two a client meant is not ours to guess."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"duplicate key {twice!r}")
    return data
