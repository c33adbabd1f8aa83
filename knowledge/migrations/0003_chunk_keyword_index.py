"""Chunks searched by words (knowledge.keyword): on SQLite an FTS5 index of their text (external content: the
text is stored once, in knowledge_chunk, and triggers keep the index in step with it); on PostgreSQL a GIN index
of their English text search vector."""
from django.db import migrations

SQLITE = [
    "CREATE VIRTUAL TABLE knowledge_chunk_fts USING fts5(text, content='knowledge_chunk', content_rowid='id', "
    "tokenize='porter unicode61')",
    "CREATE TRIGGER knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk BEGIN "
    "INSERT INTO knowledge_chunk_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER knowledge_chunk_fts_delete AFTER DELETE ON knowledge_chunk BEGIN "
    "INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER knowledge_chunk_fts_update AFTER UPDATE OF text ON knowledge_chunk BEGIN "
    "INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO knowledge_chunk_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts) VALUES ('rebuild')",
]
SQLITE_REVERSE = ["DROP TRIGGER knowledge_chunk_fts_update", "DROP TRIGGER knowledge_chunk_fts_delete",
                  "DROP TRIGGER knowledge_chunk_fts_insert", "DROP TABLE knowledge_chunk_fts"]
POSTGRESQL = ["CREATE INDEX knowledge_chunk_text_search ON knowledge_chunk "
              "USING gin (to_tsvector('english'::regconfig, text))"]
POSTGRESQL_REVERSE = ["DROP INDEX knowledge_chunk_text_search"]


def _run(statements: dict):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, ()):
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0002_collections_documents")]

    operations = [migrations.RunPython(_run({"sqlite": SQLITE, "postgresql": POSTGRESQL}),
                                       _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRESQL_REVERSE}))]
