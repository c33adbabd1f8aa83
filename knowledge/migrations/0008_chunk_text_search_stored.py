"""PostgreSQL: each chunk's English text search vector stored beside its text (a generated column, kept by the
database on every write) and indexed by GIN in place of the index of the expression (migration 0003): a keyword
search ranks the stored vector, where it parsed each matching chunk's text again (to_tsvector of a chunk of 150
words, about 0.1 ms: over 100,000 chunks a common word took seconds; B12 in bench/RESULTS.md). Adding the column
rewrites the table once. SQLite: nothing (its FTS5 index)."""
from django.db import migrations

POSTGRESQL = [
    "ALTER TABLE knowledge_chunk ADD COLUMN text_search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "DROP INDEX knowledge_chunk_text_search",
    "CREATE INDEX knowledge_chunk_text_search ON knowledge_chunk USING gin (text_search)",
]
POSTGRESQL_REVERSE = [
    "DROP INDEX knowledge_chunk_text_search",
    "ALTER TABLE knowledge_chunk DROP COLUMN text_search",
    "CREATE INDEX knowledge_chunk_text_search ON knowledge_chunk USING gin (to_tsvector('english'::regconfig, text))",
]


def _run(statements: list[str]):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for sql in statements:
                schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0007_keyword_statistics")]

    operations = [migrations.RunPython(_run(POSTGRESQL), _run(POSTGRESQL_REVERSE))]
