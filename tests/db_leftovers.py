"""After every test that had the database, on PostgreSQL: its runs and audit rows are gone (rolled back, or flushed
by a transactional test's teardown). Rows still there were committed by another connection after that: a server,
a thread or a worker the test left going. The next tests of the worker would take them for theirs (the audit trail
is one chain for the whole database: its tests failed so, blaming no one). So the test that left them fails at its
teardown, naming them and the test before it on the worker, and they are removed, so that its neighbours pass."""
from __future__ import annotations

import pytest

CHECKED = ("audit_auditevent", "audit_pendingauditevent", "workflows_workflowexecution")
_state: dict = {"blocker": None, "previous": None}


@pytest.fixture(scope="session", autouse=True)
def _db_leftovers_blocker(django_db_blocker):
    _state["blocker"] = django_db_blocker


def _leftovers() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f'(SELECT count(*) FROM "{table}")' for table in CHECKED))
        counts = dict(zip(CHECKED, cursor.fetchone()))
        if not any(counts.values()):
            return ""
        cursor.execute('SELECT "action", "target_type", "target_id", "correlation_id", "created_at" FROM '
                       '"audit_auditevent" UNION ALL SELECT "action", "target_type", "target_id", "correlation_id", '
                       '"created_at" FROM "audit_pendingauditevent" ORDER BY 5 LIMIT 10')
        audit = cursor.fetchall()
        cursor.execute('SELECT "id", "status", "mode", "workflow_type", "created_at", "completed_at" FROM '
                       '"workflows_workflowexecution" ORDER BY "created_at" LIMIT 10')
        runs = cursor.fetchall()
        cursor.execute("TRUNCATE " + ", ".join(f'"{table}"' for table in CHECKED) + " CASCADE")
    return f"{counts}; audit rows {audit}; runs {runs}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    result = yield
    previous, _state["previous"] = _state["previous"], item.nodeid
    had_database = item.get_closest_marker("django_db") or "_django_db_helper" in item.fixturenames
    # (after the last test, nextitem None, the test database is gone with the session's fixtures)
    if not had_database or nextitem is None or _state["blocker"] is None:
        return result
    from django.db import connection

    if connection.vendor != "postgresql":
        return result
    with _state["blocker"].unblock():
        left = _leftovers()
    if left:
        pytest.fail(f"rows committed by another connection were left in the database after {item.nodeid} (the test "
                    f"before it on this worker: {previous}): {left}", pytrace=False)
    return result
