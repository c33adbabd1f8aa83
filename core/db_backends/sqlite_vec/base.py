"""Django's SQLite backend on `pysqlite3` (SQLite 3.51, built to load extensions), with sqlite-vec loaded on every
connection: `vec0` virtual tables, KNN `MATCH`, `vec_distance_cosine`, for vector search on the embedded database.

Where Django's backend reaches the standard `sqlite3` module by name, this one does the same with pysqlite3's
(why, and each place: docs/architecture.md#the-sqlite-backend). Nothing may open this database with the standard
module in the same process: two SQLite libraries do not see each other's POSIX locks.
"""
from __future__ import annotations

import datetime
import decimal
import functools
import importlib.util
import os
from collections.abc import Mapping
from itertools import tee

from django.db.backends.sqlite3 import base as django_sqlite
from django.utils.asyncio import async_unsafe
from django.utils.dateparse import parse_date, parse_datetime, parse_time
from pysqlite3 import dbapi2 as Database

# sqlite-vec's loadable extension, `vec0` beside the package's __init__ (where sqlite_vec.loadable_path() finds it),
# found without importing the package: its __init__ imports numpy, 0.2-0.4 s of CPU at every process start.
VEC0_PATH = os.path.join(os.path.dirname(importlib.util.find_spec("sqlite_vec").origin), "vec0")

Database.register_converter("bool", b"1".__eq__)
Database.register_converter("date", django_sqlite.decoder(parse_date))
Database.register_converter("time", django_sqlite.decoder(parse_time))
Database.register_converter("datetime", django_sqlite.decoder(parse_datetime))
Database.register_converter("timestamp", django_sqlite.decoder(parse_datetime))
Database.register_adapter(decimal.Decimal, str)
Database.register_adapter(datetime.date, django_sqlite.adapt_date)
Database.register_adapter(datetime.datetime, django_sqlite.adapt_datetime)


@functools.lru_cache(maxsize=1024)
def qmark_query(query: str) -> str:
    """A "format" (%s) query in SQLite's "qmark" (?) style, by Django's own pattern as its
    SQLiteCursorWrapper.convert_query converts it, kept: a process runs few distinct statements, and the regex took
    19 us of a 647-character INSERT, a lookup 0.8 (about 17 a chat turn; bench/RESULTS.md, B1)."""
    return django_sqlite.FORMAT_QMARK_REGEX.sub("?", query).replace("%%", "%")


class CursorWrapper(Database.Cursor):
    """Django's SQLiteCursorWrapper on pysqlite3's Cursor: "format" (%s) and "pyformat" (%(name)s) parameters
    become SQLite's "qmark" (?) and "named" (:name) ones; a literal "%s" is written "%%s"."""

    def convert_query(self, query, *, param_names=None):
        if param_names is None:
            return qmark_query(query)
        return query % {name: f":{name}" for name in param_names}

    def execute(self, query, params=None):
        if params is None:
            return super().execute(query)
        param_names = list(params) if isinstance(params, Mapping) else None
        return super().execute(self.convert_query(query, param_names=param_names), params)

    def executemany(self, query, param_list):
        # A generator may be passed: look at its first item without using it up.
        peekable, param_list = tee(iter(param_list))
        first = next(peekable, None)
        param_names = list(first) if first and isinstance(first, Mapping) else None
        return super().executemany(self.convert_query(query, param_names=param_names), param_list)


class DatabaseWrapper(django_sqlite.DatabaseWrapper):
    Database = Database

    @async_unsafe
    def get_new_connection(self, conn_params):
        connection = Database.connect(**conn_params)
        django_sqlite.register_functions(connection)
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA legacy_alter_table = OFF")
        for init_command in self.init_commands:
            if init_command := init_command.strip():
                connection.execute(init_command)
        # Only while sqlite-vec loads: SQL cannot load an extension (load_extension()) on this connection after.
        connection.enable_load_extension(True)
        try:
            connection.load_extension(VEC0_PATH)
        finally:
            connection.enable_load_extension(False)
        return connection

    def create_cursor(self, name=None):
        return self.connection.cursor(factory=CursorWrapper)
