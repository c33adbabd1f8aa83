"""Rows written and read in one statement each, without the ORM's per-statement work: the run path's hot
statements.

`rows_insert` is one multi-row INSERT (optionally an upsert, optionally returning columns), `row_update` one
UPDATE (set and add) and `rows_select` one SELECT of whole rows, through Django's own cursor, the same SQL on
PostgreSQL and SQLite. A statement's head is built once per shape, each value is prepared by its field and each
column read is converted by its field, so rows are stored and read exactly as the ORM would store and read them;
what it skips is the ORM's per-statement work (querysets, instances, pre_save, the compiler), which was most of a
turn's cost. Use it where a statement is on every run; everywhere else the ORM is simpler.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction


def db_connection():
    """The thread's connection itself: `django.db.connection` is a proxy that looks it up again (in asgiref's
    context-local storage) on every attribute read, and preparing a value reads it up to three times."""
    return connections[DEFAULT_DB_ALIAS]


# Fields whose value goes to the database driver as it is (no conversion by the field on either backend).
_PLAIN = (models.CharField, models.TextField, models.IntegerField, models.BooleanField)


@dataclass(frozen=True)
class Rows:
    """Rows for one INSERT (see rows_insert), to be written along with another's."""
    model: type[models.Model]
    rows: list[dict[str, Any]]
    conflict: tuple[str, ...] = ()
    update: tuple[str, ...] = ()


def rows_insert(model: type[models.Model], rows: list[dict[str, Any]], *, conflict: tuple[str, ...] = (),
                update: tuple[str, ...] = (), returning: tuple[str, ...] = (),
                along: tuple[Rows, ...] = ()) -> list[tuple]:
    """INSERT `rows` (dicts by attname; a field a row leaves out gets its default) in one statement. With
    `conflict` (field names of a unique constraint), a row that collides updates the `update` fields to the new
    row's values instead. Returns the `returning` columns of every row written, in order (empty without).
    `along`: other tables' rows written by the same statement on PostgreSQL (a data-modifying WITH), by one
    statement each before it elsewhere."""
    along = [_insert_sql(more.model, more.rows, more.conflict, more.update, ()) for more in along if more.rows]
    if not rows:
        return statements_run(along[0], along[1:]) if along else []
    return statements_run(_insert_sql(model, rows, conflict, update, returning), along, fetch=bool(returning))


def statements_run(main: tuple[str, list], along: list[tuple[str, list]] = (), *,
                   fetch: bool = False) -> list[tuple]:
    """Run the statement `main` (SQL, params) and, with it, the data-modifying `along` ones: on PostgreSQL as one
    statement (a data-modifying WITH, which PostgreSQL runs after `main`), elsewhere each on its own before it.
    Returns `main`'s rows when `fetch`."""
    connection = db_connection()
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
    """What makes a write all-or-nothing: a transaction, unless the write is one statement on PostgreSQL outside
    any transaction (its rows riding on one statement: statements_run), which is atomic by itself there; BEGIN
    and COMMIT would cost two more round trips. Commit hooks (transaction.on_commit) then run right after it."""
    connection = db_connection()
    if one_statement and connection.vendor == "postgresql" and not connection.in_atomic_block:
        return nullcontext()
    return transaction.atomic()


def _insert_sql(model, rows, conflict, update, returning) -> tuple[str, list]:
    connection = db_connection()
    shape = _shape(model, conflict, update, returning)
    params = []
    for row in rows:
        for field, plain, default in shape.fields:
            value = row[field.attname] if field.attname in row else default()
            params.append(value if plain or value is None else field.get_db_prep_save(value, connection))
    placeholders = ", ".join([shape.placeholder] * len(rows))
    return f"{shape.head} VALUES {placeholders}{shape.tail}", params


def row_update(model: type[models.Model], *, where: dict[str, Any], values: dict[str, Any] | None = None,
               added: dict[str, Any] | None = None) -> int:
    """One UPDATE of the rows whose fields equal `where`: `values` set, `added` added to what is stored (counters,
    never lost to a concurrent writer). Returns how many rows it changed."""
    connection = db_connection()
    meta = model._meta
    quote = connection.ops.quote_name
    changes, params = [], []
    for name, value in (values or {}).items():
        field = meta.get_field(name)
        changes.append(f"{quote(field.column)} = %s")
        params.append(None if value is None else field.get_db_prep_save(value, connection))
    for name, value in (added or {}).items():
        field = meta.get_field(name)
        changes.append(f"{quote(field.column)} = {quote(field.column)} + %s")
        params.append(field.get_db_prep_save(value, connection))
    conditions = []
    for name, value in where.items():
        field = meta.get_field(name)
        conditions.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {quote(meta.db_table)} SET {', '.join(changes)} WHERE {' AND '.join(conditions)}",
                       params)
        return cursor.rowcount


def instances_insert(instances: list[models.Model], *, along: tuple[models.Model, ...] = ()) -> None:
    """INSERT new instances of one model as `save(force_insert=True)` would store them (auto_now fields set, an
    auto-increment id read back), in one statement, without the ORM's per-statement work. `along`: new instances
    of other models (without an auto-increment id) written by the same statement (see rows_insert)."""
    if not instances:
        return
    meta = instances[0]._meta
    auto = meta.pk if isinstance(meta.pk, models.AutoField) else None
    ids = rows_insert(type(instances[0]), [_stored(instance) for instance in instances],
                      returning=(auto.name,) if auto else (),
                      along=tuple(Rows(type(more), [_stored(more)]) for more in along))
    for instance, row in zip(instances, ids or [None] * len(instances)):
        if auto is not None:
            instance.pk = row[0]
        instance._state.adding = False  # stored, as save() leaves it (Model._state is documented)
    for more in along:
        more._state.adding = False


def _stored(instance: models.Model) -> dict[str, Any]:
    """A new instance's fields as save(force_insert=True) stores them (an auto-increment id left to the database)."""
    return {f.attname: f.pre_save(instance, add=True) for f in instance._meta.concrete_fields
            if not isinstance(f, models.AutoField)}


def instance_insert_from(instance: models.Model, *, source: str, taken: dict[str, str]) -> tuple[str, list]:
    """PostgreSQL: the SQL and parameters of an INSERT of a new `instance` (as instances_insert stores it) by a
    SELECT from `source` (a WITH query's name): the fields named in `taken` (attnames) are SQL expressions over it,
    the others parameters cast to their column's type. It writes a row for each row of `source` (none, one)."""
    connection = db_connection()
    meta = instance._meta
    quote = connection.ops.quote_name
    columns, values, params = [], [], []
    for field in (f for f in meta.concrete_fields if not isinstance(f, models.AutoField)):
        columns.append(quote(field.column))
        if field.attname in taken:
            values.append(taken[field.attname])
            continue
        value = field.pre_save(instance, add=True)
        values.append(f"%s::{field.db_type(connection)}")
        params.append(None if value is None else field.get_db_prep_save(value, connection))
    return (f"INSERT INTO {quote(meta.db_table)} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}",
            params)


def rows_select(model: type[models.Model], where: str, params: list, *, order: str = "",
                limit: int | None = None) -> list[models.Model]:
    """Instances of `model` read by one SELECT of all its columns: `where` and `order` are SQL over its columns
    (double-quoted), `params` the values for their placeholders, each prepared by `db_value`."""
    connection = db_connection()
    sql = f"{_reader(model, connection.vendor).head} WHERE {where}"
    if order:
        sql += f" ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [instance_from_row(model, row) for row in cursor.fetchall()]


def rows_select_with(model: type[models.Model], related: str, where: str, params: list, *,
                     limit: int | None = None) -> list[models.Model]:
    """rows_select, each instance with the row its foreign key `related` points to, read by the same statement (a
    JOIN, as a queryset's select_related reads it) and set on it. `where` names columns with their table
    (`column_of`)."""
    connection = db_connection()
    field = model._meta.get_field(related)
    other = field.related_model
    mine, theirs = _reader(model, connection.vendor), _reader(other, connection.vendor)
    sql = (f"SELECT {mine.qualified}, {theirs.qualified} FROM {mine.table} JOIN {theirs.table} "
           f"ON {column_of(other, field.target_field.name)} = {column_of(model, field.name)} WHERE {where}")
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    split = len(mine.attnames)
    found = []
    for row in rows:
        instance = instance_from_row(model, row[:split])
        setattr(instance, related, instance_from_row(other, row[split:]))
        found.append(instance)
    return found


def column_of(model: type[models.Model], name: str) -> str:
    """Field `name`'s column with its table, quoted, for a statement that reads more than one table."""
    connection = db_connection()
    quote = connection.ops.quote_name
    return f"{quote(model._meta.db_table)}.{quote(model._meta.get_field(name).column)}"


def db_value(model: type[models.Model], name: str, value: Any) -> Any:
    """`value` of field `name` as the database receives it in a query (as a queryset's filter would send it)."""
    connection = db_connection()
    return model._meta.get_field(name).get_db_prep_value(value, connection)


def instance_from_row(model: type[models.Model], row: tuple) -> models.Model:
    """An instance from a row of all of `model`'s concrete columns in their order (a `RETURNING` of
    `returned_columns(model)`), each value converted as a queryset would convert it (the backend's converters,
    then the field's), so it is what a read would have given."""
    connection = db_connection()
    reader = _reader(model, connection.vendor)
    values = []
    for (column, converters), value in zip(reader.columns, row):
        for convert in (*connection.ops.get_db_converters(column), *converters):
            value = convert(value, column, connection)
        values.append(value)
    return model.from_db(connection.alias, reader.attnames, values)


def returned_columns(model: type[models.Model]) -> str:
    """All of `model`'s concrete columns, quoted, in order: what instance_from_row reads."""
    connection = db_connection()
    return _reader(model, connection.vendor).select


class _Reader:
    def __init__(self, model: type[models.Model]):
        connection = db_connection()
        meta = model._meta
        quote = connection.ops.quote_name
        self.attnames = [f.attname for f in meta.concrete_fields]
        self.columns = []
        for field in meta.concrete_fields:
            column = field.get_col(meta.db_table)
            # the field's own converters; the backend's are asked of the connection in use (instance_from_row)
            self.columns.append((column, tuple(column.get_db_converters(connection))))
        self.select = ", ".join(quote(f.column) for f in meta.concrete_fields)
        self.table = quote(meta.db_table)
        self.qualified = ", ".join(f"{self.table}.{quote(f.column)}" for f in meta.concrete_fields)
        self.head = f"SELECT {self.select} FROM {self.table}"


@lru_cache(maxsize=64)
def _reader(model: type[models.Model], vendor: str) -> _Reader:
    return _Reader(model)


class _Shape:
    def __init__(self, model: type[models.Model], conflict: tuple[str, ...], update: tuple[str, ...],
                 returning: tuple[str, ...]):
        connection = db_connection()
        meta = model._meta
        quote = connection.ops.quote_name
        written = [f for f in meta.concrete_fields if not isinstance(f, models.AutoField)]
        self.fields = [(f, isinstance(f, _PLAIN) and not isinstance(f, models.ForeignKey), _default(f))
                       for f in written]
        self.placeholder = "(" + ", ".join(["%s"] * len(written)) + ")"
        self.head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in written)})"
        tail = ""
        if conflict:
            columns = ", ".join(quote(meta.get_field(name).column) for name in conflict)
            changes = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in (meta.get_field(n).column for n in update))
            tail = f" ON CONFLICT ({columns}) DO UPDATE SET {changes}" if update else f" ON CONFLICT ({columns}) DO NOTHING"
        if returning:
            tail += " RETURNING " + ", ".join(quote(meta.get_field(name).column) for name in returning)
        self.tail = tail


def _default(field: models.Field):
    if isinstance(field, models.DateTimeField) and (field.auto_now or field.auto_now_add):
        from django.utils import timezone

        return timezone.now
    return field.get_default


@lru_cache(maxsize=256)
def _shape_for(model: type[models.Model], vendor: str, conflict: tuple[str, ...], update: tuple[str, ...],
               returning: tuple[str, ...]) -> _Shape:
    return _Shape(model, conflict, update, returning)


def _shape(model, conflict, update, returning) -> _Shape:
    connection = db_connection()
    return _shape_for(model, connection.vendor, tuple(conflict), tuple(update), tuple(returning))
