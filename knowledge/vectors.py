"""Vectors in a column, searched by cosine distance, on both databases.

PostgreSQL: pgvector's `vector` type, its Django field and its `<=>` operator. SQLite: the same field stores the
vector as sqlite-vec stores one, a BLOB of little-endian float32 values, and the distance is sqlite-vec's
`vec_distance_cosine` (loaded on every connection by core/db_backends/sqlite_vec). A value read back is a list of
floats on both (pgvector's choice).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import sqlite_vec
from django.db.models import Func
from pgvector.django import CosineDistance as PgCosineDistance
from pgvector.django import VectorField


class EmbeddingField(VectorField):
    """pgvector's VectorField (`vector`, or `vector(dimensions)`), a BLOB of float32 on SQLite."""

    def db_type(self, connection: Any) -> str:
        if connection.vendor == "sqlite":
            return "blob"
        return super().db_type(connection)

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if connection.vendor == "sqlite":
            return None if value is None else sqlite_vec.serialize_float32([float(x) for x in value])
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> list[float] | None:
        if connection.vendor == "sqlite":
            return None if value is None else np.frombuffer(value, dtype="<f4").tolist()
        return super().from_db_value(value, expression, connection)


class CosineDistance(PgCosineDistance):
    """1 - cosine similarity of a vector column and a vector: pgvector's `<=>`, sqlite-vec's
    `vec_distance_cosine`. On SQLite the vector, the same JSON text pgvector is sent, goes through `vec_f32()`:
    a deterministic function of a constant, which SQLite computes once per statement, where the JSON given to
    vec_distance_cosine itself is parsed again for every row (75 times slower over 5,000 chunks)."""

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any):
        column, vector = self.get_source_expressions()
        parsed_once = self.copy()
        parsed_once.set_source_expressions([column, Func(vector, function="vec_f32")])
        return parsed_once.as_sql(compiler, connection, function="vec_distance_cosine", arg_joiner=", ",
                                  **extra_context)
