"""audit/statements.py's named statements on the database the suite runs on (SQLite, and PostgreSQL with
DATABASE_URL): the INSERT names every column, stores rows as the ORM stores them and gives each its id; the head is
the newest row's hash; a chain appended through them verifies."""
import re

import pytest
from django.db import models, transaction

from audit import statements
from audit.models import AuditEvent, PendingAuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_append, audit_fields
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_insert_names_every_column_of_an_audit_row():
    columns = tuple(re.findall(r'"(\w+)"', statements.EVENTS_INSERT.split(")")[0])[1:])
    assert columns == statements.EVENT_COLUMNS
    assert set(columns) == {f.attname for f in AuditEvent._meta.concrete_fields if not isinstance(f, models.AutoField)}


def test_rows_appended_read_back_as_written_link_up_and_the_head_is_the_last():
    user = UserFactory()
    data = {"text": "naïve ✓ \"quoted\"", "amount": "0.00000001", "nested": [1, None, True]}
    with transaction.atomic():
        events = audit_append([audit_fields(action="test.first", actor=user, data=data, ip="::ffff:10.0.0.1"),
                               audit_fields(action="test.second", target_type="thing", target_id="42")])

    assert all(event.pk is not None and not event._state.adding for event in events)
    stored = {event.pk: event for event in AuditEvent.objects.filter(pk__in=[e.pk for e in events])}
    for event in events:
        again = stored[event.pk]
        assert [getattr(again, name) for name in statements.EVENT_COLUMNS] == [
            getattr(event, name) for name in statements.EVENT_COLUMNS]
    assert events[1].prev_hash == events[0].hash
    assert statements.chain_head() == events[1].hash == AuditEvent.objects.order_by("-id").first().hash
    assert audit_chain_verify().valid


def test_the_queue_insert_names_every_column_of_a_pending_row():
    columns = tuple(re.findall(r'"(\w+)"', statements.PENDING_INSERT.split(")")[0])[1:])
    assert columns == statements.PENDING_COLUMNS
    assert set(columns) == {f.attname for f in PendingAuditEvent._meta.concrete_fields
                            if not isinstance(f, models.AutoField)}


@pytest.mark.postgres
def test_the_head_and_the_oldest_pending_rows_are_read_and_taken_off_the_queue_in_one_statement():
    from django.utils import timezone

    head = audit_append([audit_fields(action="test.head")])[-1].hash
    assert statements.chain_head_and_pending(10) == (head, [])
    now = timezone.now()
    statements.pending_insert([{"created_at": now, **audit_fields(action=f"test.p{i}", data={"i": i}, ip="10.1.2.3")}
                               for i in range(3)])

    read_head, pending = statements.chain_head_and_pending(2)

    assert read_head == head
    assert [(row["action"], row["data"], row["ip"], row["created_at"]) for row in pending] == [
        ("test.p0", {"i": 0}, "10.1.2.3", now), ("test.p1", {"i": 1}, "10.1.2.3", now)]
    assert list(PendingAuditEvent.objects.values_list("action", flat=True)) == ["test.p2"]


def test_whether_any_row_is_queued():
    from django.utils import timezone

    assert statements.pending_any() is False
    statements.pending_insert([{"created_at": timezone.now(), **audit_fields(action="test.queued")}])
    assert statements.pending_any() is True
