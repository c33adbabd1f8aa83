"""Vectors in a column, searched by cosine distance, on both databases.

PostgreSQL: pgvector's `vector` type, its Django field and its `<=>` operator. SQLite: the same field stores the
vector as sqlite-vec stores one, a BLOB of little-endian float32 values, and the distance is sqlite-vec's
`vec_distance_cosine` (loaded on every connection by core/db_backends/sqlite_vec). A value read back is a list of
floats on both (pgvector's choice).

pgvector's Django integration is imported only on PostgreSQL (its package imports django.contrib.postgres and with
it psycopg), and numpy not at all: every process start loads this module (the models' field), most never search.
"""
from __future__ import annotations

import struct
from functools import cached_property
from typing import Any

from django.db import models
from django.db.models import FloatField, Func, Value
from pgvector import Vector


def float32_blob(values: list[float]) -> bytes:
    """A vector as sqlite-vec reads one: its values as little-endian float32."""
    return struct.pack(f"<{len(values)}f", *values)


def from_float32_blob(blob: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


def vector_text(value: Any) -> str:
    """A vector as PostgreSQL's `vector` type reads one (and sqlite-vec's vec_f32): `[1.0,2.5]`."""
    if isinstance(value, list):
        return f"[{','.join(str(float(v)) for v in value)}]"
    return (value if isinstance(value, Vector) else Vector(value)).to_text()


class EmbeddingField(models.Field):
    """pgvector's VectorField (`vector`, or `vector(dimensions)`) on PostgreSQL, a BLOB of float32 on SQLite."""

    description = "Vector"
    empty_strings_allowed = False

    def __init__(self, *args: Any, dimensions: int | None = None, **kwargs: Any) -> None:
        self.dimensions = dimensions
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions
        return name, path, args, kwargs

    @cached_property
    def _pgvector(self):
        """pgvector's field of the same dimensions, which this one is on PostgreSQL."""
        from pgvector.django import VectorField

        return VectorField(dimensions=self.dimensions)

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "sqlite":
            return "blob"
        return self._pgvector.db_type(connection)

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else vector_text(value)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if connection.vendor == "sqlite":
            return None if value is None else float32_blob([float(x) for x in value])
        return self._pgvector.get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> list[float] | None:
        if connection.vendor == "sqlite":
            return None if value is None else from_float32_blob(value)
        return self._pgvector.from_db_value(value, expression, connection)

    def to_python(self, value: Any) -> list[float] | None:
        if value is None or isinstance(value, list):
            return value
        if isinstance(value, Vector):
            return value.to_list()
        return [float(v) for v in str(value).strip()[1:-1].split(",") if v.strip()]  # vector_text's form

    def value_to_string(self, obj: Any) -> str:
        value = self.get_prep_value(self.value_from_object(obj))
        return "" if value is None else value

    def formfield(self, **kwargs: Any):
        from pgvector.django.vector import VectorFormField  # only where a form shows a vector

        return super().formfield(**{"form_class": VectorFormField, **kwargs})


class CosineDistance(Func):
    """1 - cosine similarity of a vector column and a vector: pgvector's `<=>`, sqlite-vec's
    `vec_distance_cosine`. The vector is sent as the text pgvector reads. On SQLite it goes through `vec_f32()`:
    a deterministic function of a constant, which SQLite computes once per statement, where the JSON given to
    vec_distance_cosine itself is parsed again for every row (75 times slower over 5,000 chunks)."""

    function = ""
    arg_joiner = " <=> "
    output_field = FloatField()

    def __init__(self, expression: Any, vector: Any, **extra: Any) -> None:
        if not hasattr(vector, "resolve_expression"):
            vector = Value((vector if isinstance(vector, Vector) else Vector(vector)).to_text())
        super().__init__(expression, vector, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any):
        column, vector = self.get_source_expressions()
        parsed_once = self.copy()
        parsed_once.set_source_expressions([column, Func(vector, function="vec_f32")])
        return parsed_once.as_sql(compiler, connection, function="vec_distance_cosine", arg_joiner=", ",
                                  **extra_context)
