"""The audit hash chain's format (docs/architecture.md#i7): which fields a row's hash covers and how they are
serialized, one implementation for the writers and the check. The format, field by field, and why numbers and
addresses are normalized: docs/operations/audit.md#the-chains-format.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from django.utils.ipv6 import clean_ipv6_address

GENESIS_HASH = "0" * 64

HASHED_FIELDS = ("created_at", "actor_id", "actor_type", "action", "target_type", "target_id", "correlation_id",
                 "ip", "data", "prev_hash")


def ip_normalize(value: str | None) -> str | None:
    """The form Django stores (and PostgreSQL's inet returns); None for anything that is not an address."""
    if not value:
        return None
    try:
        address = ipaddress.ip_address(str(value).strip().split("%")[0])  # no IPv6 zone: inet refuses it
    except ValueError:
        return None
    return clean_ipv6_address(str(address)) if address.version == 6 else str(address)


# Numbers are written to 28 significant digits (Decimal's default precision), whatever the thread's context says.
_NUMBER_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN, Emin=-999999, Emax=999999, clamp=0)
_EXACT_INT = 10**28  # an int below it in magnitude has at most 28 digits: written exactly, as json.dumps writes it
_EXACT_FLOAT_INT = 2.0**53  # an integral float below it in magnitude: repr writes it exactly, as its int


def _number(value: int | float | Decimal) -> str:
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if exact == 0:
        return "0"  # -0.0 too: jsonb has no negative zero
    return format(exact.normalize(_NUMBER_CONTEXT), "f")


class _NotPlain(Exception):
    """A value json.dumps would not write as the format has it."""


_AS_IS = frozenset({str, bool, type(None)})  # written by json.dumps as the format has them
# The format's JSON text of a plain value (_plain): keys sorted, no whitespace, strings ASCII-only with JSON escapes.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> Any:
    """`value` as json.dumps(sort_keys=True) writes it as the format has it (floats it would write otherwise as ints),
    or _NotPlain: a Decimal, an int of more than 28 digits, a float json writes in exponent form (or as a float,
    ".0", where the format has an int), another type, or a dict two of whose keys have one text (the format sorts
    those by their values). A dict's values that need nothing are taken as they are, without a call each."""
    kind = type(value)
    if kind is dict:
        plain = {}
        for key, item in value.items():
            kind = type(item)
            plain[key if type(key) is str else str(key)] = (
                item if kind in _AS_IS or (kind is int and -_EXACT_INT < item < _EXACT_INT) else _plain(item))
        if len(plain) != len(value):
            raise _NotPlain
        return plain
    if kind is list or kind is tuple:
        return [_plain(item) for item in value]
    if kind in _AS_IS or (kind is int and -_EXACT_INT < value < _EXACT_INT):
        return value
    if kind is float:
        if value.is_integer():
            if -_EXACT_FLOAT_INT < value < _EXACT_FLOAT_INT:
                return int(value)  # -0.0 too
        elif 1e-4 <= abs(value):  # below 2**52 (it has a fraction): repr writes it without an exponent; or ±inf
            return value
    raise _NotPlain


def canonical_json(value: Any) -> str:
    """The format's JSON text of `value`: its plain form encoded once, or, for what has none, written node by node
    (equal texts: tests/audit/test_chain_format.py)."""
    try:
        return _ENCODER.encode(_plain(value))
    except _NotPlain:
        return _canonical_json_by_node(value)


def _canonical_json_by_node(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True is an int
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        items = sorted((str(key), item) for key, item in value.items())
        return "{" + ",".join(f"{json.dumps(key)}:{_canonical_json_by_node(item)}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical_json_by_node(item) for item in value) + "]"
    raise TypeError(f"cannot serialize {type(value).__name__} in an audit row")


def row_hash(*, created_at: datetime, actor_id: int | None, actor_type: str, action: str, target_type: str,
             target_id: str, correlation_id: str, ip: str | None, data: dict, prev_hash: str) -> str:
    document = {
        "created_at": created_at.astimezone(dt_timezone.utc).isoformat(timespec="microseconds"),
        "actor_id": actor_id, "actor_type": actor_type, "action": action, "target_type": target_type,
        "target_id": target_id, "correlation_id": correlation_id, "ip": ip_normalize(ip), "data": data,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()
