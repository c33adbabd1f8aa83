"""`manage.py audit_verify` (docs/architecture.md#i7): OK with the row count, or exit 1 naming the first bad row."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import AuditEvent
from audit.services import audit_record

pytestmark = pytest.mark.django_db
TABLE = AuditEvent._meta.db_table


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("audit_verify", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def record(count: int) -> list[AuditEvent]:
    return [audit_record(action="execution.started", target_id=str(n)) for n in range(count)]


def test_it_prints_ok_with_the_row_count_and_the_head():
    events = record(3)
    assert run() == (f"OK: 3 audit rows verified, head {events[-1].hash}\n", "")


def test_an_empty_trail_is_ok():
    assert run() == ("OK: 0 audit rows verified\n", "")


def test_it_names_the_first_bad_row_and_exits_1():
    events = record(4)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET target_id = %s WHERE id = %s", ["forged", events[1].pk])
        cursor.execute(f"DELETE FROM {TABLE} WHERE id = %s", [events[3].pk])
    stdout, stderr = StringIO(), StringIO()

    with pytest.raises(SystemExit) as exited:
        call_command("audit_verify", "--batch-size", "1", stdout=stdout, stderr=stderr)

    assert exited.value.code == 1
    assert stdout.getvalue() == ""
    assert stderr.getvalue().startswith(f"audit chain broken at row #{events[1].pk}: content_changed: ")


def test_it_refuses_a_batch_size_below_one():
    with pytest.raises(CommandError, match="batch-size"):
        run("--batch-size", "0")
