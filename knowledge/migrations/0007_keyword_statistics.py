"""SQLite: each collection's word statistics for BM25, kept by triggers on the chunks (knowledge/keyword_statistics.py),
counted from the chunks there are. PostgreSQL ranks by its own full-text search: nothing to do."""
from django.db import migrations

from knowledge.keyword_statistics import keyword_statistics_drop, keyword_statistics_ensure


def statistics_create(apps, schema_editor):
    keyword_statistics_ensure(using=schema_editor.connection, create=True)


def statistics_drop(apps, schema_editor):
    keyword_statistics_drop(using=schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0006_default_collections_of_documents")]

    operations = [migrations.RunPython(statistics_create, statistics_drop)]
