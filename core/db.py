"""Database plumbing: Django's connection pool (forks, dead connections) and transactions PostgreSQL rolls back.

django-q2 forks its worker processes. A pool carried across a fork would hand the child the parent's sockets and
no threads to tend them; so every pool is closed before a fork (its connections closed cleanly, in the parent) and
each process makes its own on first use, which Django does by itself.

Every write path takes its row locks in one order (docs/architecture.md#the-lock-order); a transaction PostgreSQL
still rolls back as a deadlock or serialization failure is run again by `retried_on_conflict`.
"""
from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import random
import select
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from operator import attrgetter
from typing import Any, Callable, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, models, transaction

from core.errors import Unavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")
Converter = Callable[[Any, Any], Any]  # (a value, not None; the connection) -> what the driver is given

# SQLSTATEs of a transaction PostgreSQL rolled back for a passing conflict with another one.
CONFLICT_SQLSTATES = {"40P01": "deadlock", "40001": "serialization failure"}
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.02  # the first pause before trying again (random up to it, then doubling)


def _pools_close() -> None:
    for alias in connections:
        wrapper = connections[alias]
        if getattr(wrapper, "pool", None) is not None:
            wrapper.close_pool()


def pools_close_before_fork() -> None:
    """Call once per process (at start-up)."""
    os.register_at_fork(before=_pools_close)


def database_answers() -> dict:
    """Ask the database one trivial query (raises when it does not answer): its vendor."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def database_reachable() -> bool:
    """Whether the database answers a query now."""
    try:
        database_answers()
    except Exception:  # noqa: BLE001 - a check reports failures, it never raises them
        return False
    return True


def connections_give_back() -> None:
    """A thread about to wait (a run before a model or tool call, a runner thread between runs) gives its pooled
    connections back, so a waiting thread holds none; it borrows again at its next statement. Without a pool
    (SQLite) a connection stays with its thread: opening one costs more than keeping it."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.settings_dict.get("OPTIONS", {}).get("pool") and not wrapper.in_atomic_block:
            wrapper.close()


def pooled_connection_check(sender, connection, **kwargs) -> None:
    """connection_created receiver: never let a thread use a pooled connection the server has closed (PostgreSQL
    restarted, or ended the session), or it would be a 500 per connection the pool held. With Django's pool a
    thread "connects" each time it borrows one. An idle connection has nothing to read, so polling its socket
    costs no round trip; one the server closed is readable (its last words, then end of file), and only then is
    it asked (psycopg_pool's own check). A dead one is given back (the pool discards it) for another; the other
    idle ones most likely went with the same restart, so the pool checks them all now (its `check()`), rather than
    hand them out one by one. (Django's CONN_HEALTH_CHECKS would check every connection it lends with a round trip,
    and psycopg_pool pauses longer and longer between the dead ones it finds for one borrower, past the pool's
    timeout when it held many.)"""
    pool = getattr(connection, "pool", None)
    if pool is None:  # SQLite, or PostgreSQL without Django's pool
        return
    poller = select.poll()
    poller.register(connection.connection.fileno(), select.POLLIN)
    if not poller.poll(0):
        return
    import psycopg  # (a pool is psycopg's)

    try:
        pool.check_connection(connection.connection)
        return  # something harmless was waiting (a notice)
    except psycopg.Error:
        logger.warning("a pooled database connection was closed by the server; checking the pool's others")
    pool.check()
    connection.close()  # the dead one goes back to the pool, which discards it
    connection.connect()  # (this receiver runs again, for the connection lent now)


def _conflict(exc: OperationalError) -> str | None:
    """What kind of conflict rolled the transaction back, or None for any other database error."""
    return CONFLICT_SQLSTATES.get(getattr(exc.__cause__, "sqlstate", None))


def retried_on_conflict(write: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function whose work is one transaction: when PostgreSQL rolls it back as a deadlock victim or a
    serialization failure, it is called again (CONFLICT_ATTEMPTS times at most, after a short random pause), and
    then refused as Unavailable (503 `database_conflict`), never a 500. Only a transaction's outermost caller can
    try it again: called inside a transaction, it runs once and the conflict goes up to whoever opened it."""

    @functools.wraps(write)
    def attempts(*args, **kwargs) -> T:
        if connection.in_atomic_block:
            return write(*args, **kwargs)
        attempt = 1
        while True:
            try:
                return write(*args, **kwargs)
            except OperationalError as exc:
                kind = _conflict(exc)
                if kind is None:
                    raise
                if attempt == CONFLICT_ATTEMPTS:
                    logger.warning("%s: %s %d times, refused", write.__qualname__, kind, attempt)
                    raise Unavailable(f"the database rolled this back ({kind}) {attempt} times; try again",
                                      code="database_conflict") from exc
                logger.info("%s: %s, trying again (attempt %d)", write.__qualname__, kind, attempt)
            time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2 ** (attempt - 1)))
            attempt += 1

    return attempts


def statements_run(main: tuple[str, list], along: list[tuple[str, list]] = (), *,
                   fetch: bool = False) -> list[tuple]:
    """Run the statement `main` (SQL, params) and, with it, the INSERTs `along`: on PostgreSQL as one statement (a
    data-modifying WITH, which it runs atomically by itself: `main` first, then the parts of `along` from the last
    to the first, as PostgreSQL runs the WITH parts a statement does not read), elsewhere each on its own before
    it. The parts are named along_0, along_1...: `main` and a later part may read an earlier one (PostgreSQL only).
    Returns `main`'s rows when `fetch`."""
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            for sql, params in along:
                cursor.execute(sql, params)
            along = ()
        prefix = ", ".join(f"along_{number} AS ({sql})" for number, (sql, _) in enumerate(along))
        cursor.execute((f"WITH {prefix} " if prefix else "") + main[0],
                       [param for _, params in along for param in params] + main[1])
        return cursor.fetchall() if fetch else []


def write_atomic(*, one_statement: bool) -> AbstractContextManager:
    """What makes a write all-or-nothing: a transaction, unless it is one statement on PostgreSQL (statements_run),
    atomic by itself there: outside any transaction, BEGIN and COMMIT would cost two more round trips; inside one (a
    gateway call's start, in its run's creating transaction), a savepoint two more, and a failed statement rolls
    the enclosing transaction back whole instead (nothing of it half-written)."""
    connection = connections[DEFAULT_DB_ALIAS]
    if one_statement and connection.vendor == "postgresql":
        return nullcontext() if transaction.get_autocommit() else transaction.atomic(savepoint=False)
    return transaction.atomic()


def text_storable(text: str) -> str:
    """`text` as PostgreSQL can store it, in text and in jsonb: a NUL as U+FFFD, a lone surrogate (which UTF-8 cannot
    encode) as "?". Text from outside (an MCP server's answer) goes through it before any row holds it."""
    if type(text) is str and text.isascii() and "\x00" not in text:
        return text  # (most text: nothing to change)
    return str(text).replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def json_storable(value: Any) -> Any:
    """A JSON value (dicts, lists, scalars) with every string in it, keys too, text_storable."""
    if isinstance(value, str):
        return text_storable(value)
    if isinstance(value, dict):
        return {text_storable(str(key)): json_storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_storable(item) for item in value]
    return value


def passes_as_is(field: models.Field) -> bool:
    """Whether its values go to the driver as they are: the field would not change them on either database (nor
    set them as it saves: no auto_now)."""
    return isinstance(field, (models.CharField, models.TextField, models.IntegerField, models.BooleanField)) \
        and not isinstance(field, models.ForeignKey)


def value_converter(field: models.Field, connection, *, literal: bool = False) -> Converter | None:
    """What prepares `field`'s values (not None) for `connection`'s database, called with (value, connection): the
    same result as `field.get_db_prep_save(value, connection)` or, `literal`, as `_json_literal` (a row in JSON,
    PostgreSQL); None when they go as they are (passes_as_is; a JSON field's value in JSON). A value it is sure of
    skips Django's chain of calls (a datetime's 29 calls become 4, a Decimal's 14 become 2): an aware datetime
    where the database's time is UTC, a dict or list of a JSON field with no encoder, a finite Decimal, a UUID, a
    foreign key's of these or an int id; anything else goes through the field. A tool-call turn prepares about 170
    values (what it saves: bench/RESULTS.md, B1)."""
    if passes_as_is(field) or literal and isinstance(field, models.JSONField):
        return None
    slow: Converter = functools.partial(_json_literal, field) if literal else field.get_db_prep_save
    if connection.vendor not in ("sqlite", "postgresql"):  # (whose operations the shortcuts follow)
        return slow
    target = field.target_field if type(field) is models.ForeignKey else field
    kind, native = type(target), connection.vendor == "postgresql"
    if kind is models.DateTimeField:
        if not settings.USE_TZ or connection.settings_dict["TIME_ZONE"] not in (None, "UTC"):
            return slow
        if not literal and not native:
            def convert(value, connection):
                if type(value) is datetime.datetime and value.utcoffset() is not None:
                    # SQLite: str() of Django's make_naive(value, UTC), its UTC time without the offset ("+00:00")
                    return value.astimezone(datetime.timezone.utc).isoformat(" ")[:-6]
                return slow(value, connection)  # (a naive one: the field's warning)
            return convert
        text = datetime.datetime.isoformat if literal else None

        def convert(value, connection):
            if type(value) is datetime.datetime and value.utcoffset() is not None:
                return value if text is None else text(value)
            return slow(value, connection)
        return convert
    if kind is models.DecimalField:
        text = str if literal else None

        def convert(value, connection):
            if type(value) is Decimal and value.is_finite():
                return value if text is None else text(value)
            return slow(value, connection)  # (NaN, infinities: the field's refusal)
        return convert
    if kind is models.UUIDField:
        sure, fast = (uuid.UUID,), str if literal else None if native else attrgetter("hex")
    elif kind is models.JSONField and target.encoder is None and not native:
        sure, fast = (dict, list), json.dumps
    elif kind in (models.AutoField, models.BigAutoField):
        sure, fast = (int,), None  # an id: int() of an int is itself (bool is not one)
    else:
        return slow

    def convert(value, connection):
        if type(value) in sure:
            return value if fast is None else fast(value)
        return slow(value, connection)
    return convert


@functools.lru_cache(maxsize=None)
def field_converters(model: type[models.Model], attnames: tuple[str, ...], alias: str
                     ) -> tuple[tuple[str, models.Field, Converter | None], ...]:
    """(attname, field, what prepares its values on the database `alias`: value_converter) for each of `attnames`
    of `model`, made once."""
    connection = connections[alias]
    fields = (model._meta.get_field(attname) for attname in attnames)  # get_field takes an attname too
    return tuple((field.attname, field, value_converter(field, connection)) for field in fields)


def prepared_values(model: type[models.Model], attnames: tuple[str, ...], values, connection) -> list[Any]:
    """`values` of `model`'s fields `attnames`, as `get_db_prep_save` prepares them (a plain field's as it is)."""
    return [value if convert is None or value is None else convert(value, connection)
            for (_, _, convert), value in zip(field_converters(model, attnames, connection.alias), values,
                                              strict=True)]


class Insert:
    """A named INSERT of `columns` (attnames of `model`, in the statement's order) with its rows' values. Its rows
    go in at `VALUES {values}`: on SQLite a row of placeholders each; on PostgreSQL all of them as one JSON
    parameter (`json_populate_recordset`), so that its text and its one parameter stay the same whatever its rows
    (psycopg keeps it converted, PostgreSQL keeps it prepared) and the rows cost one json.dumps: 116 µs of client
    CPU for one node row against 158 as a row of placeholders, 152 against 251 for three (bench/RESULTS.md, "How a
    multi-row INSERT sends its rows"). It binds only what the ORM has no form for: upserts (nodes, checkpoints),
    INSERTs riding on another statement (statements_run) and conditional INSERTs; other rows are `bulk_create`d."""

    def __init__(self, model: type[models.Model], columns: tuple[str, ...], sql: str):
        assert "VALUES {values}" in sql, "the rows go in at VALUES {values}"
        self.model, self.columns, self.sql = model, columns, sql
        self._row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        self._model_fields = [model._meta.get_field(name) for name in columns]
        self._converters: dict[str, list[tuple[str, str, Converter | None]]] = {}
        self._sqlite_sql: dict[int, str] = {}

    def _fields(self, connection) -> list[tuple[str, str, Converter | None]]:
        """(attname, column, what prepares its values) on `connection`'s database: on PostgreSQL as text in JSON."""
        fields = self._converters.get(connection.alias)
        if fields is None:
            literal = connection.vendor == "postgresql"
            fields = self._converters[connection.alias] = [
                (name, field.column, value_converter(field, connection, literal=literal))
                for name, field in zip(self.columns, self._model_fields)]
        return fields

    @functools.cached_property
    def _json_sql(self) -> str:
        """PostgreSQL: the statement with its rows as one JSON array of objects keyed by column, read as the
        table's row type (each value goes through its column type's input, as a literal would)."""
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        columns = ", ".join(quote(field.column) for field in self._model_fields)
        return self.sql.replace("VALUES {values}", f"SELECT {columns} FROM json_populate_recordset("
                                                   f"NULL::{quote(self.model._meta.db_table)}, %s::json)")

    def bound_joined(self, rows: list[dict[str, Any]], *, column: str, part: str, key: str) -> tuple[str, list]:
        """PostgreSQL: as `bound`, each row's `column` taking the id of the row of the WITH part `part` (an earlier
        one of statements_run's `along`, which returns "id" and `key`) whose `key` is the value the row gives for
        it (none when it gives none): rows whose parent is written by the same statement, its id not known before
        (a node and its calls)."""
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        target = self.model._meta.get_field(column).column
        picked = ", ".join('"parent"."id"' if field.column == target else f'"row".{quote(field.column)}'
                           for field in self._model_fields)
        sql = self.sql.replace("VALUES {values}", (
            f"SELECT {picked} FROM json_populate_recordset(NULL::{quote(self.model._meta.db_table)}, %s::json) "
            f'AS "row" LEFT JOIN {quote(part)} AS "parent" ON "parent".{quote(key)} = "row".{quote(target)}'))
        return sql, self.bound(rows)[1]

    def bound(self, rows: list[dict[str, Any]]) -> tuple[str, list]:
        """The statement for `rows` (dicts by attname, every column given) and its parameters."""
        connection = connections[DEFAULT_DB_ALIAS]
        fields = self._fields(connection)
        if connection.vendor == "postgresql":
            objects = [{column: value if convert is None or value is None else convert(value, connection)
                        for name, column, convert in fields for value in (row[name],)} for row in rows]
            return self._json_sql, [json.dumps(objects, ensure_ascii=False, separators=(",", ":"))]
        sql = self._sqlite_sql.get(len(rows))
        if sql is None:  # the text for a few rows is made once (a format of the statement: 2-3 µs)
            sql = self.sql.format(values=", ".join([self._row] * len(rows)))
            if len(rows) <= 8:
                self._sqlite_sql[len(rows)] = sql
        return (sql,
                [value if convert is None or value is None else convert(value, connection)
                 for row in rows for name, _, convert in fields for value in (row[name],)])


def _json_literal(field: models.Field, value: Any, connection=None) -> Any:
    """A value as its field prepares it for any database (`get_prep_value`: an aware datetime, a Decimal, a UUID,
    an address as text), written as the text its column type reads. (A Converter: `connection` is not read.)"""
    value = field.get_prep_value(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return value
