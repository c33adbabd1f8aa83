"""An ANN index of the chunks' vectors per dimension in INDEXED_DIMENSIONS (knowledge/vector_index.py): HNSW with
cosine distance on PostgreSQL, a sqlite-vec `vec0` table of bits kept in step by triggers on SQLite."""
from django.db import migrations

from knowledge.vector_index import INDEXED_DIMENSIONS, vector_index_create, vector_index_drop


def indexes_create(apps, schema_editor):
    for dimensions in INDEXED_DIMENSIONS:
        vector_index_create(dimensions=dimensions, using=schema_editor.connection)


def indexes_drop(apps, schema_editor):
    for dimensions in INDEXED_DIMENSIONS:
        vector_index_drop(dimensions=dimensions, using=schema_editor.connection)


class Migration(migrations.Migration):

    dependencies = [
        ("knowledge", "0003_chunk_keyword_index"),
    ]

    operations = [
        migrations.RunPython(indexes_create, indexes_drop),
    ]
