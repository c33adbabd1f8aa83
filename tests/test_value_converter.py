"""core.db.value_converter against Django's own preparation, for every column a named statement binds (the
module-level `Insert`s of each app's statements.py, and the conversation's and message's columns, which
conversations.statements binds) and values of every kind: what it gives equals `field.get_db_prep_save` on this
database (SQLite, and PostgreSQL with DATABASE_URL), and on PostgreSQL also core.db's text of a row in JSON; a value
Django refuses, it refuses the same way; a database whose time is not UTC gets no shortcut."""
import importlib
import importlib.util
import os
import uuid
import warnings
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.test import override_settings

from conversations.models import Conversation, Message
from core.db import Insert, _json_literal, passes_as_is, value_converter

WHEN = datetime(2026, 11, 23, 22, 5, 7, 123456, tzinfo=timezone.utc)
SOME_ID = uuid.UUID("6f1c9d2e-8b0a-4c3f-9e7d-2a5b4c3d2e1f")


class Moment(datetime):
    """A datetime of another type (a test clock's): not one the shortcut is sure of."""


SAMPLES = {
    models.DateTimeField: [
        WHEN, WHEN.replace(microsecond=0), WHEN.astimezone(ZoneInfo("Asia/Kolkata")),
        datetime(2026, 3, 29, 3, 30, 0, 5, tzinfo=ZoneInfo("Europe/Paris")),  # just after a DST change
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        datetime(2026, 1, 2, 3, 4, 5, 6), date(2026, 1, 2), "2026-11-23T22:05:07.5+02:00", "2026-11-23",
        Moment(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)],
    models.JSONField: [
        {"a": 1}, {}, [], [1, 2.5, None, True, {"k": "v"}], ["ünï", {"": None}],
        {"text": "naïve ☃ \"quoted\" \u2028", "deep": [{"x": []}]}, "text", 7, 1.5, True, {"money": Decimal("1")}],
    models.DecimalField: [
        Decimal("0.123456789012345678"), Decimal("0"), Decimal("-0.00"), Decimal("1E+3"), Decimal("0E-8"),
        Decimal("123456789012.12345678"), Decimal("NaN"), Decimal("-Infinity"), 0.1, 3, "1.50"],
    models.UUIDField: [SOME_ID, str(SOME_ID), SOME_ID.hex, str(SOME_ID).upper(), SOME_ID.int, "not-a-uuid"],
    models.AutoField: [5, 2**40, 0, "7", True],
    models.GenericIPAddressField: ["10.0.0.1", "::ffff:10.0.0.1"],
    models.BinaryField: [b"\x00\xff", bytearray(b"ab"), memoryview(b"cd")],
}
SAMPLES[models.BigAutoField] = SAMPLES[models.AutoField]
ANY_FIELD = [None, "", "text", 5, 1.5]  # what any column may be handed


def _bound_columns() -> dict[str, models.Field]:
    """Every column that a named Insert or conversations.statements binds, but those whose values go as they are."""
    bound = [(Conversation, f.attname) for f in Conversation._meta.concrete_fields]
    bound += [(Message, f.attname) for f in Message._meta.concrete_fields]
    for app in apps.get_app_configs():
        if importlib.util.find_spec(f"{app.name}.statements") is not None:
            module = importlib.import_module(f"{app.name}.statements")
            bound += [(insert.model, name) for insert in vars(module).values() if isinstance(insert, Insert)
                      for name in insert.columns]
    fields = {f"{model.__name__}.{name}": model._meta.get_field(name) for model, name in bound}
    return {name: field for name, field in sorted(fields.items()) if not passes_as_is(field)}


COLUMNS = _bound_columns()


def _kind(field: models.Field) -> type:
    return type(field.target_field if field.is_relation else field)


def _outcome(prepare, value) -> tuple:
    """What `prepare(value)` gives (its type and repr: Decimal("1.0") is not Decimal("1.00")) or raises, and the
    warnings it makes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = prepare(value)
        except Exception as exc:  # noqa: BLE001 - Django's refusal is compared, not handled
            outcome = ("raised", type(exc), str(exc))
        else:
            outcome = ("gave", type(result), repr(bytes(result) if isinstance(result, memoryview) else result),
                       getattr(result, "dumps", None))  # (psycopg's Jsonb: its object and how it is dumped)
    # Only the preparation's own warnings (Django's fields', core.db's): catch_warnings records the process's, and
    # a collection of another test's leftovers (an unclosed socket's ResourceWarning) may come in between.
    return outcome, [(w.category, str(w.message)) for w in caught if _prepares(w.filename)]


def _prepares(filename: str) -> bool:
    return f"django{os.sep}db{os.sep}" in filename or filename.endswith(f"core{os.sep}db.py")


def _differences(convert, expected, values, connection) -> list:
    """(value, what `convert` made of it, what `expected` made of it) where they differ."""
    return [(value, mine, theirs) for value in values
            for mine, theirs in [(_outcome(lambda v: convert(v, connection), value), _outcome(expected, value))]
            if mine != theirs]


def _connection():
    return connections[DEFAULT_DB_ALIAS]


def _not_in_utc():
    """The database, with its TIME_ZONE set to another zone than UTC (a wrapper of its own: never connected)."""
    connection = _connection()
    return type(connection)({**connection.settings_dict, "TIME_ZONE": "Europe/Paris"}, "not_in_utc")


def test_the_columns_cover_every_kind_of_shortcut():
    assert {models.DateTimeField, models.JSONField, models.DecimalField, models.UUIDField, models.AutoField,
            models.BigAutoField} <= {_kind(field) for field in COLUMNS.values()}
    assert any(isinstance(field, models.ForeignKey) for field in COLUMNS.values())


@pytest.mark.parametrize("column", COLUMNS)
def test_a_columns_values_are_prepared_as_its_field_prepares_them_to_save(column):
    field = COLUMNS[column]
    values = SAMPLES.get(_kind(field), []) + ANY_FIELD
    connection = _connection()

    convert = value_converter(field, connection)

    assert _differences(convert, lambda value: field.get_db_prep_save(value, connection), values, connection) == []


@pytest.mark.postgres  # an Insert's rows go as JSON on PostgreSQL only
@pytest.mark.parametrize("column", COLUMNS)
def test_on_postgresql_a_columns_values_in_a_json_row_are_the_text_they_were(column):
    connection, field = _connection(), COLUMNS[column]

    convert = value_converter(field, connection, literal=True)

    if isinstance(field, models.JSONField):
        assert convert is None  # its value is written into the JSON as it is
    else:
        assert _differences(convert, lambda value: _json_literal(field, value),
                            SAMPLES.get(_kind(field), []) + ANY_FIELD, connection) == []


def test_a_database_whose_time_is_not_utc_gets_the_fields_own_preparation_of_datetimes():
    field = Message._meta.get_field("created_at")
    elsewhere = _not_in_utc()

    convert = value_converter(field, elsewhere)

    assert convert == field.get_db_prep_save
    assert _differences(convert, lambda value: field.get_db_prep_save(value, elsewhere),
                        SAMPLES[models.DateTimeField], elsewhere) == []
    with override_settings(USE_TZ=False):
        assert value_converter(field, _connection()) == field.get_db_prep_save
