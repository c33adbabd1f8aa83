"""Both databases search vectors (issue 45): PostgreSQL with pgvector (scripts/services.sh's PostgreSQL has it in
every database, the tests' among them), SQLite with sqlite-vec (core/db_backends/sqlite_vec, the default backend)."""
import pytest
from django.db import connection


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
