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
from decimal import Decimal
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


def _number(value: int | float | Decimal) -> str:
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if exact == 0:
        return "0"  # -0.0 too: jsonb has no negative zero
    return format(exact.normalize(), "f")


def canonical_json(value: Any) -> str:
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
        return "{" + ",".join(f"{json.dumps(key)}:{canonical_json(item)}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
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
