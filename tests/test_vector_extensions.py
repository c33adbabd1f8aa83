"""Both databases search vectors (issue 45): PostgreSQL with pgvector (scripts/services.sh's PostgreSQL has it in
every database, the tests' among them), SQLite with sqlite-vec (core/db_backends/sqlite_vec, the default backend)."""
import datetime
import math
from decimal import Decimal

import pytest
import sqlite_vec
from django.conf import settings
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper as StockSQLite

from chatter_project.settings import SQLITE_ENGINE
from tests.factories import UserFactory


@pytest.mark.postgres
@pytest.mark.django_db
def test_issue_45_the_test_database_on_postgresql_has_pgvector_with_hnsw():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()
        cursor.execute("CREATE TEMPORARY TABLE probe (id int, embedding vector(3))")
        cursor.execute("INSERT INTO probe VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0.9,0.1,0]')")
        cursor.execute("CREATE INDEX ON probe USING hnsw (embedding vector_cosine_ops)")
        cursor.execute("SELECT id FROM probe ORDER BY embedding <=> '[1,0,0]' LIMIT 2")
        nearest = [row[0] for row in cursor.fetchall()]
    assert tuple(int(part) for part in version.split(".")[:2]) >= (0, 5)  # HNSW came in 0.5
    assert nearest == [1, 3]


sqlite_only = pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != SQLITE_ENGINE,
                                 reason="the SQLite backend's own test: this run's database is another")


@sqlite_only
@pytest.mark.django_db
def test_issue_45_the_default_sqlite_database_loads_sqlite_vec():
    with connection.cursor() as cursor:
        cursor.execute("SELECT vec_version(), sqlite_version()")
        vec_version, sqlite_version = cursor.fetchone()
    assert vec_version.startswith("v0.")
    assert tuple(int(part) for part in sqlite_version.split(".")) >= (3, 41)  # pysqlite3's, not Python's 3.40


def test_item_24_the_backend_loads_the_extension_sqlite_vec_names_without_importing_it():
    # Found beside the package's __init__, as the package finds it, where importing the package imports numpy.
    from core.db_backends.sqlite_vec.base import VEC0_PATH

    assert VEC0_PATH == sqlite_vec.loadable_path()


@sqlite_only
@pytest.mark.django_db
def test_issue_45_a_vec0_table_answers_knn_by_cosine_through_django():
    rows = [(1, [1.0, 0.0, 0.0]), (2, [0.0, 1.0, 0.0]), (3, [0.9, 0.1, 0.0]), (4, [-1.0, 0.0, 0.0])]
    with connection.cursor() as cursor:
        cursor.execute("CREATE VIRTUAL TABLE probe USING vec0(embedding float[3] distance_metric=cosine)")
        cursor.executemany("INSERT INTO probe (rowid, embedding) VALUES (%s, %s)",
                           [(pk, sqlite_vec.serialize_float32(vector)) for pk, vector in rows])
        cursor.execute("SELECT rowid, distance FROM probe WHERE embedding MATCH %(query)s AND k = %(k)s "
                       "ORDER BY distance", {"query": sqlite_vec.serialize_float32([1.0, 0.0, 0.0]), "k": 3})
        found = cursor.fetchall()
    assert [pk for pk, _ in found] == [1, 3, 2]
    assert [distance for _, distance in found] == pytest.approx([0.0, 1 - 0.9 / math.hypot(0.9, 0.1), 1.0], abs=1e-6)  # float32


@pytest.fixture
def stock_sqlite(tmp_path):
    """A connection of Django's own SQLite backend (Python's sqlite3) with our settings, on a file of its own: two
    SQLite libraries in one process must never open the same file (neither sees the other's POSIX locks)."""
    stock = StockSQLite({**connection.settings_dict, "ENGINE": "django.db.backends.sqlite3",
                         "NAME": str(tmp_path / "stock.sqlite3")}, alias="stock")
    yield stock
    stock.close()


@sqlite_only
@pytest.mark.django_db
def test_issue_45_the_sqlite_vec_backend_sets_up_a_connection_as_djangos_own_does(stock_sqlite):
    with stock_sqlite.cursor() as theirs, connection.cursor() as ours:
        for pragma in ("foreign_keys", "legacy_alter_table", "journal_mode", "synchronous", "busy_timeout"):
            theirs.execute(f"PRAGMA {pragma}")
            ours.execute(f"PRAGMA {pragma}")
            assert ours.fetchall() == theirs.fetchall(), pragma
        # Django's SQL functions (django_date_extract, LPAD, SHA256, ...) on both; sqlite-vec's on ours.
        theirs.execute("SELECT name, narg FROM pragma_function_list WHERE builtin = 0")
        ours.execute("SELECT name, narg FROM pragma_function_list WHERE builtin = 0")
        djangos, mine = set(theirs.fetchall()), set(ours.fetchall())
        assert ("django_date_extract", 2) in djangos and djangos <= mine
        assert {("vec_version", 0), ("vec_distance_cosine", 2)} <= mine - djangos
        for query, params in (("SELECT %s, '100%%', '%%s'", [7]), ("SELECT %(a)s || %(b)s", {"a": "x", "b": "y"}),
                              ("SELECT %s, '100%%', '%%s'", [8])):  # (again: ours converts it from its memo)
            theirs.execute(query, params)
            ours.execute(query, params)
            assert ours.fetchall() == theirs.fetchall()
        for cursor in (theirs, ours):  # a generator of parameters, in both styles
            cursor.execute("CREATE TEMPORARY TABLE probe (n integer)")
            cursor.executemany("INSERT INTO probe VALUES (%s)", ([n] for n in (1, 2)))
            cursor.executemany("INSERT INTO probe VALUES (%(n)s)", ({"n": n} for n in (3, 4)))
            cursor.execute("SELECT n FROM probe ORDER BY n")
        assert ours.fetchall() == theirs.fetchall() == [(1,), (2,), (3,), (4,)]
    assert connection.Database.sqlite_version_info > StockSQLite.Database.sqlite_version_info


@sqlite_only
@pytest.mark.django_db
def test_issue_45_values_read_and_written_through_the_sqlite_vec_backend_convert_as_in_django(stock_sqlite):
    written = [Decimal("1.10"), datetime.date(2026, 11, 25), datetime.datetime(2026, 11, 25, 14, 0, 1), True]
    with stock_sqlite.cursor() as theirs, connection.cursor() as ours:
        for cursor in (theirs, ours):  # the adapters, then the converters of declared column types
            cursor.execute("CREATE TEMPORARY TABLE probe (d decimal, day date, moment datetime, flag bool)")
            cursor.execute("INSERT INTO probe VALUES (%s, %s, %s, %s)", written)
            cursor.execute("SELECT d, day, moment, flag FROM probe")
        rows = ours.fetchall()
        assert rows == theirs.fetchall()
    assert rows == [(1.1, *written[1:])]  # NUMERIC affinity: Django's DecimalField converts it back
