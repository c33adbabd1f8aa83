"""The audit chain's SQL statements: fixed text with placeholders, the same on PostgreSQL and SQLite (as
workflows.statements keeps the run path's). Each run ends by appending its rows here, under the chain's lock, so
these are three plain statements rather than the ORM's queryset and bulk_create work (bench/RESULTS.md, "Named
statements"). tests/audit/test_statements.py runs them on both databases."""
from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

from audit.models import AuditEvent

# Writers of the chain take turns on PostgreSQL (the transaction's advisory lock; see audit.services).
CHAIN_LOCK = "SELECT pg_advisory_xact_lock(%s)"
# The chain's head: the hash of its newest row.
CHAIN_HEAD = 'SELECT "hash" FROM "audit_auditevent" ORDER BY "id" DESC LIMIT 1'
EVENT_COLUMNS = ("created_at", "actor_id", "actor_type", "action", "target_type", "target_id", "correlation_id", "ip",
                 "data", "prev_hash", "hash")
EVENTS_INSERT = (
    'INSERT INTO "audit_auditevent" ("created_at", "actor_id", "actor_type", "action", "target_type", "target_id", '
    '"correlation_id", "ip", "data", "prev_hash", "hash") VALUES {values} RETURNING "id"')


def chain_lock(key: int) -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(CHAIN_LOCK, [key])


def chain_head() -> str | None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(CHAIN_HEAD)
        row = cursor.fetchone()
    return row[0] if row else None


def events_insert(events: list[AuditEvent]) -> None:
    """INSERT new `events` as save(force_insert=True) stores them (each field prepares its value), in one
    statement; each gets its id."""
    connection = connections[DEFAULT_DB_ALIAS]
    fields = [AuditEvent._meta.get_field(name) for name in EVENT_COLUMNS]
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [field.get_db_prep_save(field.pre_save(event, add=True), connection) for event in events
              for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(EVENTS_INSERT.format(values=", ".join([row] * len(events))), params)
        ids = [pk for (pk,) in cursor.fetchall()]
    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding = False  # stored, as save() leaves it (Model._state is documented)
