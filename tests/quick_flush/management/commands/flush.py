"""The flush after each transactional test (Django's TransactionTestCase calls `flush`), cheaper than Django's.

Django's flush empties every table and then sends `post_migrate`, whose receivers create every content type and
permission again: most of a flush's time (Django's `create_contenttypes` and `create_permissions` query every app's
rows, twice), times the suite's ~700 transactional tests, twice. This one leaves the database as Django's does,
from fewer statements:
- content types and permissions are kept: the rows Django's own flush made (this process's first flush is Django's)
  are compared with what the tables hold (one SELECT), and while they are the same, Django's receivers would find
  every row there and write nothing, so the signal is sent without those two; their ids stay what every cached
  `ContentType` holds. Where a test changed them (a migration test does), this flush is Django's own again;
- only tables with rows are emptied, with DELETE (both databases create foreign keys deferred, so the order within
  the one transaction does not matter), where a TRUNCATE of every table makes PostgreSQL new files for each. A
  process's audit chainer appends queued rows a moment after a run, so after a test's last run: on PostgreSQL the
  flush holds the chain first (audit.services: the chain's advisory lock), so that a chainer either has committed
  before the tables are looked at, and its rows are deleted, or finds the queue empty after the flush. Without it
  the chainer's rows could land in a table seen empty a moment before, and stay for the next tests
  (tests/db_leftovers.py found such rows); locking the tables instead deadlocks with the chainer's statements.
Every other receiver of the signal runs: the apps' seeders (templates, prices, schedules, the hot reads' version).
A flush that must reset sequences, inhibits the signal or asks for anything else, is Django's own.
"""
from contextlib import contextmanager

from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.core.management.commands import flush
from django.core.management.sql import emit_post_migrate_signal
from django.db import connections, transaction
from django.db.models.signals import post_migrate

from audit.services import CHAIN_LOCK_KEY

# The kept tables, and the columns that make a row what the models say.
KEPT = {"django_content_type": ("id", "app_label", "model"),
        "auth_permission": ("id", "content_type_id", "codename", "name")}
# Django's receivers that write only the kept tables, with the dispatch_uid their apps connect them with.
MODEL_ROWS = ((create_contenttypes, None), (create_permissions, "django.contrib.auth.management.create_permissions"))
# Per database (alias, name): the kept tables' rows after this process's last flush of Django's own.
_made: dict[tuple[str, str], tuple] = {}


class Command(flush.Command):
    def handle(self, **options):
        database = options["database"]
        connection = connections[database]
        made = (database, connection.settings_dict["NAME"])
        if (options.get("interactive") or options.get("reset_sequences", True)
                or options.get("inhibit_post_migrate", False)):
            _made.pop(made, None)
            return super().handle(**options)
        quote = connection.ops.quote_name
        with transaction.atomic(using=database), connection.cursor() as cursor:
            if kept_rows(cursor, quote) != _made.get(made):
                django_flush = True
            else:
                django_flush = False
                tables = [name for name in connection.introspection.django_table_names(only_existing=True,
                                                                                       include_views=False)
                          if name not in KEPT]
                if connection.vendor == "postgresql":  # (SQLite's transactions take its one write lock already)
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
                for start in range(0, len(tables), 200):  # SQLite allows 500 terms in one compound SELECT
                    part = tables[start:start + 200]
                    cursor.execute(" UNION ALL ".join(f"SELECT %s WHERE EXISTS (SELECT 1 FROM {quote(name)})"
                                                      for name in part), part)
                    for (name,) in cursor.fetchall():
                        cursor.execute(f"DELETE FROM {quote(name)}")
        if django_flush:  # the first, or a test changed the kept tables
            super().handle(**options)
            with connection.cursor() as cursor:
                _made[made] = kept_rows(cursor, quote)
            return
        with without_model_rows():
            emit_post_migrate_signal(options["verbosity"], False, database)


def kept_rows(cursor, quote) -> tuple:
    rows = []
    for table, columns in KEPT.items():
        cursor.execute(f"SELECT {', '.join(map(quote, columns))} FROM {quote(table)} ORDER BY {quote('id')}")
        rows.append(tuple(cursor.fetchall()))
    return tuple(rows)


@contextmanager
def without_model_rows():
    """post_migrate without Django's receivers of content types and permissions, connected again after."""
    off = [(receiver, uid) for receiver, uid in MODEL_ROWS if post_migrate.disconnect(receiver, dispatch_uid=uid)]
    try:
        yield
    finally:
        for receiver, uid in off:
            post_migrate.connect(receiver, dispatch_uid=uid)
