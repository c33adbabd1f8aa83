"""The chain's format stays byte for byte what it was (docs/operations/audit.md#the-chains-format): fixed rows hash to
the hashes the format gave them when these were written down, so a chain written before any change to how a hash
is computed still verifies after it. Any drift (key order, escapes, a number's text, an address's form) fails."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command

from audit.chain import GENESIS_HASH, row_hash
from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db

AT = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=timezone.utc)
ESCAPES = "naïve \"quoted\" back\\slash\nline\ttab \x01 \x7f ✓ 𝄞 </script>"
NUMBERS = [0, -1, 7, 2**64, -(10**30), 0.0, -0.0, 1.5, -123.456, 0.1, 1e-7, 1e-4, 9.5e-5, 2.0, 1e16, 2.0**53 + 2,
           1e300, 123456789.125, Decimal("1.500"), Decimal("-0.00"), Decimal("1E+3"), Decimal("0.000000012345"),
           Decimal("12345678901234567890.5")]
ROW = {"created_at": AT, "actor_id": 42, "actor_type": "user", "action": "execution.completed",
       "target_type": "workflowexecution", "target_id": "6f1d2c3b-0000-4000-8000-000000000001",
       "correlation_id": "corr-1", "ip": "10.0.0.1", "prev_hash": GENESIS_HASH,
       "data": {"error_type": None, "total_tokens": 1234, "cost": "0.0012", "llm_calls": 2, "tool_calls": 1}}


def _row(**changes) -> dict:
    return {**ROW, **changes}


# (what is hashed, the hash the format gave it)
HASHED = {
    "a run's row": (ROW, "5fbfbc89c731ebef3f688b24340d5f0f1dc193264daac9c93d8d0c02cd35b1bb"),
    "no actor, no address": (_row(actor_id=None, actor_type="system", ip=None, data={}),
                             "323b60fc4558ed6a7f66c28838a650b6c46a054930e75b4140d501e8a6547cad"),
    "a time in another zone, as UTC": (_row(created_at=AT.astimezone(timezone(timedelta(hours=-5, minutes=-30)))),
                                       "5fbfbc89c731ebef3f688b24340d5f0f1dc193264daac9c93d8d0c02cd35b1bb"),
    "an IPv4-mapped address": (_row(ip="::ffff:10.0.0.1"),
                               "fcbf8acaf64bde55e124113e47dba764e63810ea1fd494ab95c070ad807c818a"),
    "an IPv6 address with a zone": (_row(ip="2001:0db8:0000:0000:0000:0000:0000:0001%eth0"),
                                    "30bf21a7aa81e9e3a67be082a98f83bc9efceb3c3a35836e073e1ed4b50dc589"),
    "no address": (_row(ip="not an address"), "dc5207c5c8d244523264632ed872b5faeb06deb7788f9090581032f01d63b621"),
    "strings and keys needing escapes, keys sorted by code point": (
        _row(data={"text": ESCAPES, ESCAPES: "key", "é": 1, "Z": 2, "a": 3, "10": 4, "9": 5, "": 6}),
        "f7dc1d44de69c9d23d2c9b028a711424f71d8bd12a768ceaa33ce399b47476d6"),
    "numbers as their exact decimal value": (_row(data={"numbers": NUMBERS}),
                                             "a257a4802bc852ca57e0ce4679b7e688d517831bc601bce87c72797742f82c4a"),
    "non-finite floats": (_row(data={"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}),
                          "2c195ac882ba6f3359a6a755260766ee1c521747483dc957bd0099ea89907fa9"),
    "nested dicts, lists and tuples": (
        _row(data={"nested": {"b": [True, False, None, [], {}, ({"y": 1, "x": (2, "3")},)],
                              "a": {"deep": {"deeper": [1.0, "1", None]}}}}),
        "fa92971e1a9398c02f8c13ae41c154cf0fbdfeab4244b802ceaf96d199909891"),
    # 1 and True are one key; its text is the string key "1"'s too: the two sort by their values
    "keys that are no strings, as their text": (
        _row(data={1: "int", True: "bool", None: "none", 2.5: "float", "1": "a string"}),
        "02070d364d93df000f46afa8dfa8a9795aaa723c484f0b8e1075df2f2c31d51f"),
}


@pytest.mark.parametrize(("fields", "expected"), list(HASHED.values()), ids=list(HASHED))
def test_a_row_hashes_as_the_format_always_had_it(fields, expected):
    assert row_hash(**fields) == expected


RECORDED = [
    {"action": "execution.started", "actor_type": "schedule", "target_type": "workflowexecution", "target_id": "e-1",
     "correlation_id": "corr-1", "ip": "::ffff:10.0.0.1",
     "data": {"workflow_type": "chat", "mode": "sync", "provider": "local", "model": "local-demo"}},
    {"action": "tool.called", "target_type": "workflowexecution", "target_id": "e-1", "correlation_id": "corr-1",
     "data": {"node_id": "tools", "tool": "calculator", "ok": True, "error": None,
              "arguments": {"expression": "12*7", "text": ESCAPES, "numbers": [1, 2.5, -0.0, 1e-7, 1e16, 2**70]}}},
    {"action": "execution.completed", "target_type": "workflowexecution", "target_id": "e-1",
     "correlation_id": "corr-1", "data": {"error_type": None, "total_tokens": 1234, "cost": Decimal("0.001200"),
                                          "llm_calls": 2, "tool_calls": 1}},
]
RECORDED_HASHES = ["1ee599d8185b0e18ec6f0e62947fac7740196f4639161d2862d99800c94586fd",
                   "63d10be9dd444fe979873b0c77b7d1292c59315762435cb20cefb0d2139d0e58",
                   "888840af9b50306fa04df021b4ae59e410de7308775d070ec3984103fce95661"]


def test_rows_recorded_at_a_fixed_time_have_the_hashes_they_always_had():
    with mock.patch("django.utils.timezone.now", return_value=AT):
        events = [audit_record(**row) for row in RECORDED]

    assert [event.hash for event in events] == RECORDED_HASHES
    stdout = StringIO()
    call_command("audit_verify", stdout=stdout)
    assert stdout.getvalue() == f"OK: 3 audit rows verified, head {RECORDED_HASHES[-1]}\n"


def test_a_chain_written_before_still_verifies():
    prev_hash = GENESIS_HASH
    rows = []
    for row, stored_hash in zip(RECORDED, RECORDED_HASHES, strict=True):
        rows.append(AuditEvent(created_at=AT, actor_type=row.get("actor_type", "system"), action=row["action"],
                               target_type=row["target_type"], target_id=row["target_id"],
                               correlation_id=row["correlation_id"], ip="::ffff:10.0.0.1" if "ip" in row else None,
                               data={**row["data"], "cost": "0.001200"} if "cost" in row["data"] else row["data"],
                               prev_hash=prev_hash, hash=stored_hash))
        prev_hash = stored_hash
    AuditEvent.objects.bulk_create(rows)

    stdout = StringIO()
    call_command("audit_verify", stdout=stdout)
    assert stdout.getvalue() == f"OK: 3 audit rows verified, head {RECORDED_HASHES[-1]}\n"
