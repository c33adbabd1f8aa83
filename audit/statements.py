"""The audit chain's SQL statements: fixed text with placeholders (as workflows.statements keeps the run path's).
Each run ends by appending its rows here, holding the chain, so these are plain statements rather than the ORM's
queryset and bulk_create work (bench/RESULTS.md, "Named statements"). The lock and the queue of pending rows are
PostgreSQL's; the rest is the same on SQLite. tests/audit/test_statements.py runs them on both databases."""
from __future__ import annotations

import json

from django.db import DEFAULT_DB_ALIAS, connections

from audit.models import AuditEvent, PendingAuditEvent
from core.db import Insert

# Writers of the chain take turns on PostgreSQL (the transaction's advisory lock; see audit.services): waiting for
# it, or only if it is free.
CHAIN_LOCK = "SELECT pg_advisory_xact_lock(%s)"
CHAIN_TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"
# The chain's head: the hash of its newest row.
CHAIN_HEAD = 'SELECT "hash" FROM "audit_auditevent" ORDER BY "id" DESC LIMIT 1'
PENDING_COLUMNS = ("created_at", "actor_id", "actor_type", "action", "target_type", "target_id", "correlation_id",
                   "ip", "data")
# PostgreSQL, holding the chain: its head and the oldest pending rows (at most %s), taken off the queue, in one
# round trip; one row of NULLs after the head when nothing is pending.
CHAIN_HEAD_AND_PENDING = (
    'WITH "taken" AS (DELETE FROM "audit_pendingauditevent" WHERE "id" IN (SELECT "id" FROM '
    '"audit_pendingauditevent" ORDER BY "id" LIMIT %s) RETURNING "id", ' + ", ".join(f'"{c}"' for c in PENDING_COLUMNS)
    + ') SELECT (SELECT "hash" FROM "audit_auditevent" ORDER BY "id" DESC LIMIT 1), "taken".* FROM (SELECT 1) AS "one"'
    ' LEFT JOIN "taken" ON true ORDER BY "taken"."id"')
# Whether any row is queued (the chainer asks before it takes the chain).
PENDING_ANY = 'SELECT EXISTS (SELECT 1 FROM "audit_pendingauditevent")'
PENDING_INSERT = (
    'INSERT INTO "audit_pendingauditevent" (' + ", ".join(f'"{c}"' for c in PENDING_COLUMNS) + ") VALUES {values}")
EVENT_COLUMNS = ("created_at", "actor_id", "actor_type", "action", "target_type", "target_id", "correlation_id", "ip",
                 "data", "prev_hash", "hash")
EVENTS_INSERT = (
    'INSERT INTO "audit_auditevent" ("created_at", "actor_id", "actor_type", "action", "target_type", "target_id", '
    '"correlation_id", "ip", "data", "prev_hash", "hash") VALUES {values} RETURNING "id"')


def chain_lock(key: int) -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(CHAIN_LOCK, [key])


def chain_try_lock(key: int) -> bool:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(CHAIN_TRY_LOCK, [key])
        return bool(cursor.fetchone()[0])


def chain_head_and_pending(most: int) -> tuple[str | None, list[dict]]:
    """PostgreSQL: the chain's head and up to `most` pending rows, oldest first, removed from the queue (the caller
    holds the chain and appends them in the same transaction)."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(CHAIN_HEAD_AND_PENDING, [most])
        rows = cursor.fetchall()
    pending = []
    for _head, pk, *values in rows:
        if pk is None:
            continue
        fields = dict(zip(PENDING_COLUMNS, values))
        if isinstance(fields["data"], str):  # Django has psycopg hand jsonb over as text
            fields["data"] = json.loads(fields["data"])
        fields["ip"] = str(fields["ip"]) if fields["ip"] is not None else None
        pending.append(fields)
    return rows[0][0], pending


def pending_any() -> bool:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(PENDING_ANY)
        return bool(cursor.fetchone()[0])


_pending_insert = Insert(PendingAuditEvent, PENDING_COLUMNS, PENDING_INSERT)
_events_insert = Insert(AuditEvent, EVENT_COLUMNS, EVENTS_INSERT)


def pending_insert(rows: list[dict]) -> None:
    """INSERT rows to be chained later (their values by column, every one of PENDING_COLUMNS), in one statement."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(*pending_insert_bound(rows))


def pending_insert_bound(rows: list[dict]) -> tuple[str, list]:
    """That statement and its parameters, for a caller that runs it with others (core.db.statements_run)."""
    return _pending_insert.bound(rows)


def chain_head() -> str | None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(CHAIN_HEAD)
        row = cursor.fetchone()
    return row[0] if row else None


def events_insert(rows: list[dict]) -> list[int]:
    """INSERT new chain rows (their values by column, every one of EVENT_COLUMNS: no model instance is built on a
    run's path) in one statement, as save(force_insert=True) would store them; their ids, in order."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(*_events_insert.bound(rows))
        return [pk for (pk,) in cursor.fetchall()]
