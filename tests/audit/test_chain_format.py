"""The chain's format stays byte for byte what it was (docs/operations/audit.md#the-chains-format): fixed rows hash to
the hashes the format gave them when these were written down, so a chain written before any change to how a hash
is computed still verifies after it. Any drift (key order, escapes, a number's text, an address's form) fails."""
import json
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal
from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.chain import GENESIS_HASH, canonical_json, row_hash
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
    "numbers as their decimal value": (_row(data={"numbers": NUMBERS}),
                                       "a257a4802bc852ca57e0ce4679b7e688d517831bc601bce87c72797742f82c4a"),
    "floats as json writes them, or as their int": (
        _row(data={"floats": [0.0, -0.0, 1.5, -0.1, 1e-4, 2.0, -123456789.125, 2.0**53 - 1, 1 / 3]}),
        "538b0efba91b988866f934a90184cecb58efd7e9c1638a455fd4bcb4a8895e32"),
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
# Numbers json.dumps writes otherwise than the format (an exponent, a ".0", more than 28 digits), one a row: (the
# number, the hash of a row whose data holds it)
NUMBERS_WRITTEN_OTHERWISE = {
    "1e-07": (1e-7, "a8d3d1e99d8e968e08f50a144fcad5b402310a137a406ffd0cd2f805abe608af"),
    "-9.5e-05": (-9.5e-5, "77c7215783482133358c6769450430cec5b209b685e5988717b39427b6553c19"),
    "5e-324": (5e-324, "a8cf7494a5b28d8817afe79bc03649417afefbf0914a8ce324e06a744f4aadcd"),
    "1e+16": (1e16, "6230dc7069432f0764542d22be777f2be26e4f4eda4708e534da9788dc883ae2"),
    "2**53 + 2.0": (2.0**53 + 2, "ed2d1a4015ba720d32b7f771ceff503349e8f73ca50012a09aebefd12d66ee48"),
    "1e+300": (1e300, "ad438f15a9807ff192a263384a18560471a83502e132ddc193da0bd70a335593"),
    "10**28 + 1": (10**28 + 1, "0c9da1a88598a922b2fc1e95ea18877bef6cc614ec7485ebb938aecfcfbd6259"),
    "-(10**28) - 1": (-(10**28) - 1, "2c46a915ec253f520c31e0387668cd695e6715e59d6e70621ed2517438163c84"),
    "2**100": (2**100, "1ed440992e98c37ebd4d1be907d49239be18e812bb8bc066c7516d56be17e766"),
    "Decimal 28 digits and more": (Decimal("1234567890123456789012345678.9"),
                                   "07a62aef0b1f3bf7e6990617de03dccb5b57b712cb65193d48380c1e6e99e557"),
}
HASHED.update({f"{name}, as the format writes it": (_row(data={"number": number, "text": "x"}), expected)
               for name, (number, expected) in NUMBERS_WRITTEN_OTHERWISE.items()})


@pytest.mark.one_database
@pytest.mark.parametrize(("fields", "expected"), list(HASHED.values()), ids=list(HASHED))
def test_a_row_hashes_as_the_format_always_had_it(fields, expected):
    assert row_hash(**fields) == expected


def format_reference(value) -> str:
    """The format as docs/operations/audit.md#the-chains-format words it, node by node: keys (as text) sorted, no
    whitespace, ASCII-only strings, numbers as their decimal value (to 28 significant digits) in fixed-point
    notation."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float, Decimal)):
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        return "0" if exact == 0 else format(exact.normalize(Context(prec=28)), "f")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, dict):
        items = sorted((str(key), item) for key, item in value.items())
        return "{" + ",".join(f"{json.dumps(key)}:{format_reference(item)}" for key, item in items) + "}"
    return "[" + ",".join(format_reference(item) for item in value) + "]"


JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats()
    | st.decimals(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.lists(children, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=3) | st.integers(1000, 1003), children, max_size=4),
    max_leaves=20)


@pytest.mark.one_database
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(JSON_LIKE)
def test_any_value_is_written_as_the_format_words_it(value):
    assert canonical_json(value) == format_reference(value)


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
