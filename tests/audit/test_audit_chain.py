"""The audit chain through its service (audit_record, redact) and its verifier (audit_chain_verify):
docs/architecture.md#i7.

Tampering is done the way an intruder with database access would do it: raw SQL, past the ORM's refusal."""
import math
import threading
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone as dj_timezone

from audit.chain import GENESIS_HASH, row_hash
from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import REDACTED, audit_record, redact
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
TABLE = AuditEvent._meta.db_table


def record_some(count: int) -> list[AuditEvent]:
    return [audit_record(action="definition.updated", target_type="workflowdefinition", target_id=f"def-{n}",
                         correlation_id=f"corr-{n}", ip="10.0.0.1", data={"version": n}) for n in range(count)]


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def swap_ids(first: int, second: int) -> None:
    spare = first + second + 1_000_000
    sql(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [spare, first])
    sql(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [first, second])
    sql(f"UPDATE {TABLE} SET id = %s WHERE id = %s", [second, spare])


# --- writing -----------------------------------------------------------------------------------------------
def test_each_row_links_to_the_one_before_it_starting_from_genesis():
    events = record_some(3)

    assert events[0].prev_hash == GENESIS_HASH
    assert [event.prev_hash for event in events[1:]] == [event.hash for event in events[:-1]]
    assert len({event.hash for event in events}) == 3
    result = audit_chain_verify()
    assert (result.valid, result.checked, result.first_bad, result.last_hash) == (True, 3, None, events[-1].hash)


def test_an_empty_trail_verifies():
    result = audit_chain_verify()
    assert (result.valid, result.checked, result.first_bad, result.last_hash) == (True, 0, None, None)


def test_actor_type_follows_the_actor_and_a_target_fills_its_type_and_id(alice):
    by_user = audit_record(action="definition.created", actor=alice, target=alice)
    by_system = audit_record(action="execution.failed")
    by_schedule = audit_record(action="schedule.fired", actor_type="schedule", target_type="schedule",
                               target_id="s-1")

    assert (by_user.actor_id, by_user.actor_type) == (alice.pk, "user")
    assert (by_user.target_type, by_user.target_id) == ("user", str(alice.pk))
    assert (by_system.actor_id, by_system.actor_type) == (None, "system")
    assert (by_schedule.actor_type, by_schedule.target_type, by_schedule.target_id) == ("schedule", "schedule", "s-1")
    assert audit_chain_verify().valid


@pytest.mark.parametrize("kwargs", [{"action": "Not An Action"}, {"action": "nodots"}, {"action": "a." + "b" * 70},
                                    {"action": "execution.started", "actor_type": "robot"}])
def test_it_refuses_a_malformed_action_or_actor_type_and_writes_nothing(kwargs):
    with pytest.raises(ValueError):
        audit_record(**kwargs)
    assert not AuditEvent.objects.exists()


def test_the_row_rolls_back_with_the_callers_transaction(alice):
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(action="definition.deleted", actor=alice)
        raise RuntimeError("the action failed")
    assert not AuditEvent.objects.exists()

    with transaction.atomic():
        get_user_model().objects.filter(pk=alice.pk).update(first_name="Alice")
        kept = audit_record(action="definition.deleted", actor=alice)
    assert kept.prev_hash == GENESIS_HASH  # the rolled-back row left no trace in the chain
    assert audit_chain_verify().valid


def test_values_read_back_from_the_database_hash_as_written():
    """The stored row must verify after its round trip through the database (jsonb on PostgreSQL renders
    numbers and addresses its own way)."""
    when = datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=timezone.utc)
    run_id = uuid.uuid4()
    data = {
        "cost": Decimal("0.00012300"), "run": run_id, "at": when, "day": when.date(),
        "floats": [0.1, 1e16, 1.5e-7, -0.0, 2.0, 123456789012345678.0, math.nan, math.inf],
        "ints": [0, -1, 10, 2**63], "flags": [True, False, None],
        "text": "ünïcode ✓ \"quoted\" \\ back\x00slash \ud800", "nested": {"z": {"b": 1, "a": [{"k": "v"}]}},
        5: "an int key",
    }
    audit_record(action="execution.completed", ip="2001:DB8:0:0:0:0:0:1", data=data)
    audit_record(action="execution.completed", ip="::ffff:1.2.3.4", data={})
    audit_record(action="execution.completed", ip="not an address")

    assert audit_chain_verify().valid
    first, second, third = AuditEvent.objects.order_by("id")
    assert first.ip == "2001:db8::1" and second.ip == "::ffff:1.2.3.4" and third.ip is None
    assert first.data["cost"] == "0.00012300" and first.data["run"] == str(run_id)
    assert first.data["at"] == "2026-11-21T10:00:00.123456+00:00" and first.data["day"] == "2026-11-21"
    assert first.data["floats"][-2:] == ["nan", "inf"]
    assert first.data["text"] == "ünïcode ✓ \"quoted\" \\ back\ufffdslash ?"
    assert first.data["5"] == "an int key"


def test_a_row_has_at_most_one_successor():
    first, _ = record_some(2)
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(created_at=dj_timezone.now(), action="execution.started",
                                  prev_hash=first.hash, hash="f" * 64)


# --- tampering -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("column, value", [
    ("action", "definition.created"), ("actor_type", "schedule"), ("target_type", "conversation"),
    ("target_id", "def-999"), ("correlation_id", "forged"), ("ip", "10.9.9.9"), ("data", '{"version": 99}'),
    ("prev_hash", "e" * 64),
])
def test_a_changed_value_in_any_column_is_detected_at_that_row(column, value):
    events = record_some(4)
    sql(f"UPDATE {TABLE} SET {column} = %s WHERE id = %s", [value, events[2].pk])

    result = audit_chain_verify()

    assert not result.valid
    assert result.first_bad.id == events[2].pk
    assert result.checked == 3
    # A forged prev_hash no longer links to the row before; anything else no longer matches the row's hash.
    assert result.first_bad.reason == ("missing_row" if column == "prev_hash" else "content_changed")


def test_a_changed_actor_or_time_is_detected(alice, bob):
    events = [audit_record(action="definition.updated", actor=alice) for _ in range(3)]
    sql(f"UPDATE {TABLE} SET actor_id = %s WHERE id = %s", [bob.pk, events[1].pk])
    assert audit_chain_verify().first_bad.id == events[1].pk

    sql(f"UPDATE {TABLE} SET actor_id = %s WHERE id = %s", [alice.pk, events[1].pk])
    assert audit_chain_verify().valid
    sql(f"UPDATE {TABLE} SET created_at = (SELECT created_at FROM {TABLE} WHERE id = %s) WHERE id = %s",
        [events[0].pk, events[2].pk])
    result = audit_chain_verify()
    assert (result.first_bad.id, result.first_bad.reason) == (events[2].pk, "content_changed")


def test_a_changed_hash_is_detected_at_that_row():
    events = record_some(3)
    sql(f"UPDATE {TABLE} SET hash = %s WHERE id = %s", ["a" * 64, events[0].pk])
    result = audit_chain_verify()
    assert (result.first_bad.id, result.first_bad.reason) == (events[0].pk, "content_changed")


def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link():
    events = record_some(4)
    forged = events[1]
    forged_hash = row_hash(created_at=forged.created_at, actor_id=None, actor_type=forged.actor_type,
                           action=forged.action, target_type=forged.target_type, target_id=forged.target_id,
                           correlation_id=forged.correlation_id, ip=forged.ip, data={"version": 42},
                           prev_hash=forged.prev_hash)
    sql(f"UPDATE {TABLE} SET data = %s, hash = %s WHERE id = %s", ['{"version": 42}', forged_hash, forged.pk])

    result = audit_chain_verify()

    assert (result.first_bad.id, result.first_bad.reason) == (events[2].pk, "missing_row")
    assert f"row #{events[2].pk}" in result.first_bad.message


def test_a_deleted_row_is_detected_at_the_row_after_it():
    events = record_some(5)
    sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[2].pk])

    result = audit_chain_verify()

    assert (result.valid, result.checked) == (False, 3)
    assert (result.first_bad.id, result.first_bad.reason) == (events[3].pk, "missing_row")


def test_a_deleted_first_row_is_detected():
    events = record_some(3)
    sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[0].pk])

    result = audit_chain_verify()

    assert (result.first_bad.id, result.first_bad.reason) == (events[1].pk, "missing_row")
    assert "start of the chain" in result.first_bad.message


def test_reordered_rows_are_detected():
    events = record_some(4)
    swap_ids(events[1].pk, events[2].pk)

    result = audit_chain_verify()

    # The row now in second place (the old third) links to the old second, which exists: reordered.
    assert (result.first_bad.id, result.first_bad.reason) == (events[1].pk, "out_of_order")


def test_a_row_moved_to_the_front_is_detected():
    events = record_some(3)
    swap_ids(events[0].pk, events[2].pk)

    result = audit_chain_verify()

    assert (result.first_bad.id, result.first_bad.reason) == (events[0].pk, "out_of_order")


def test_deleting_the_newest_rows_leaves_a_valid_chain_only_an_anchor_can_tell():
    """The known limit of a hash chain: the tail can be cut. The head (`last_hash`), recorded elsewhere, shows it."""
    events = record_some(3)
    anchor = audit_chain_verify().last_hash
    sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[-1].pk])

    result = audit_chain_verify()

    assert (result.valid, result.checked) == (True, 2)
    assert result.last_hash == events[1].hash != anchor


# --- reading in batches --------------------------------------------------------------------------------------
def test_it_reads_the_chain_in_batches():
    record_some(7)
    with CaptureQueriesContext(connection) as queries:
        result = audit_chain_verify(batch_size=3)
    assert (result.valid, result.checked) == (True, 7)
    assert len(queries) == 3  # 3 + 3 + 1 rows


def test_a_break_across_a_batch_boundary_is_found():
    events = record_some(6)
    sql(f"DELETE FROM {TABLE} WHERE id = %s", [events[3].pk])  # the last row of the second batch of 2
    result = audit_chain_verify(batch_size=2)
    assert (result.first_bad.id, result.first_bad.reason) == (events[4].pk, "missing_row")


# --- redaction -----------------------------------------------------------------------------------------------
def test_redact_hides_the_values_of_secret_looking_keys_at_any_depth():
    data = {
        "api_key": "a", "API-KEY": "b", "X-Api-Key": "c", "apiKey": "d", "key": "e", "Password": "f",
        "client_secret": "g", "access_token": "h", "Authorization": "Bearer i", "Cookie": "j",
        "headers": {"authorization": "Token k", "accept": "application/json"},
        "calls": [{"token": "l", "tool": "calculator"}, {"credentials": {"user": "m"}}],
        "private_key": "n", "session_key": "o",
        # Not secrets: token counts, template keys, ordinary words.
        "total_tokens": 12, "max_tokens": 100, "template_key": "universal_chat", "keyword": "tea", "monkey": 1,
    }

    assert redact(data) == {
        "api_key": REDACTED, "API-KEY": REDACTED, "X-Api-Key": REDACTED, "apiKey": REDACTED, "key": REDACTED,
        "Password": REDACTED, "client_secret": REDACTED, "access_token": REDACTED, "Authorization": REDACTED,
        "Cookie": REDACTED, "headers": {"authorization": REDACTED, "accept": "application/json"},
        "calls": [{"token": REDACTED, "tool": "calculator"}, {"credentials": REDACTED}],
        "private_key": REDACTED, "session_key": REDACTED,
        "total_tokens": 12, "max_tokens": 100, "template_key": "universal_chat", "keyword": "tea", "monkey": 1,
    }


def test_redact_replaces_a_configured_secret_wherever_a_string_holds_it(settings):
    """As the engine's errors have it (engine.redaction): the secret goes, the rest of the text stays readable."""
    settings.OPENAI_API_KEY = "sk-live-0123456789abcdef"
    settings.ANTHROPIC_API_KEY = "sk-ant-fedcba9876543210"

    redacted = redact({
        "error": "401 from provider: key sk-live-0123456789abcdef is invalid",
        "args": ["sk-ant-fedcba9876543210", "fine"],
        "signing": f"uses {settings.SECRET_KEY}",
        "sk-live-0123456789abcdef": "a secret as a key name",
    })

    assert redacted == {"error": f"401 from provider: key {REDACTED} is invalid", "args": [REDACTED, "fine"],
                        "signing": f"uses {REDACTED}", REDACTED: "a secret as a key name"}


def test_the_stored_row_holds_no_secret(settings):
    settings.OPENAI_API_KEY = "sk-live-0123456789abcdef"
    audit_record(action="tool.called", data={
        "tool": "http", "arguments": {"url": "https://x.test", "headers": {"Authorization": "Bearer abc"}},
        "error": "bad key sk-live-0123456789abcdef",
    })

    stored = AuditEvent.objects.get()
    assert stored.data == {"tool": "http", "arguments": {"url": "https://x.test", "headers": {"Authorization": REDACTED}},
                           "error": f"bad key {REDACTED}"}
    assert "sk-live" not in str(AuditEvent.objects.values_list("data", flat=True).get())
    assert audit_chain_verify().valid


def test_a_changed_secret_is_kept_out_of_the_next_row_and_values_are_stored_as_plain_json(settings):
    """The configured secrets are read once and again after any setting changes; a value that is not JSON is stored
    as its text, redacted as any string is when that text holds a secret."""
    settings.OPENAI_API_KEY = "sk-live-0123456789abcdef"
    audit_record(action="tool.called", data={"error": "bad key sk-live-0123456789abcdef"})
    settings.OPENAI_API_KEY = "sk-live-another-key-987654"

    class Refusal:
        def __str__(self) -> str:
            return "the upstream refused sk-live-another-key-987654"

    run_id = uuid.uuid4()
    audit_record(action="tool.called", data={
        "error": Refusal(), "before": "sk-live-0123456789abcdef", "cost": Decimal("0.0000375"), "run": run_id,
        "at": datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc), "ratio": 0.5, "calls": 3, "ok": True,
        "none": None, "tags": ("a", "b"), "nested": {"token": "x", 1: ["\x00"]}})

    assert list(AuditEvent.objects.order_by("id").values_list("data", flat=True)) == [
        {"error": f"bad key {REDACTED}"},
        {"error": f"the upstream refused {REDACTED}", "before": "sk-live-0123456789abcdef", "cost": "0.0000375",
         "run": str(run_id),
         "at": "2026-11-27T12:00:00+00:00", "ratio": 0.5, "calls": 3, "ok": True, "none": None, "tags": ["a", "b"],
         "nested": {"token": REDACTED, "1": ["\ufffd"]}},
    ]
    assert audit_chain_verify().valid


# --- concurrency ---------------------------------------------------------------------------------------------
WRITERS = 100


@pytest.mark.django_db(transaction=True)
def test_concurrent_audited_actions_leave_one_linear_chain():
    """100 threads, each its own connection and transaction (an action plus its audit row), all released at once.
    PostgreSQL takes the advisory lock; SQLite's IMMEDIATE transactions serialize the writers."""
    barrier = threading.Barrier(WRITERS)
    errors = []

    def act(n: int) -> None:
        try:
            barrier.wait(timeout=60)
            with transaction.atomic():
                user = UserFactory(username=f"writer{n}")
                audit_record(action="definition.created", actor=user, target_id=str(n))
                # Commit a little later: a writer that read the head meanwhile without waiting would fork here.
                get_user_model().objects.filter(pk=user.pk).update(first_name="done")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=act, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    rows = list(AuditEvent.objects.order_by("id").values("prev_hash", "hash", "actor_id"))
    assert len(rows) == WRITERS
    assert len({row["prev_hash"] for row in rows}) == WRITERS  # no fork
    assert {row["actor_id"] for row in rows} == set(get_user_model().objects.values_list("pk", flat=True))
    result = audit_chain_verify(batch_size=7)
    assert (result.valid, result.checked) == (True, WRITERS)
