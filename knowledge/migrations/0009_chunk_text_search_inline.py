"""PostgreSQL: each chunk's stored text search vector kept in the table's row (storage MAIN), where it was moved out
to the TOAST table (a chunk's row, its text and vector of 384 floats, is over the 2 kB at which PostgreSQL moves its
largest values out): a keyword search ranks up to PG_SCAN_ROWS matching chunks, and each one's vector read from
TOAST cost three index and heap pages more (over 100,000 chunks, 1,000 ranked about 7 to 17 ms, 2 to 3 in the
row; B12 in bench/RESULTS.md). VACUUM FULL rewrites the table once, in its order, each value stored as its column
now says (an UPDATE of every row would leave the old rows' space empty at the table's start, which a sequential
scan reads through); it locks the table while it runs and builds its indexes again, as migration 0008 did. Outside
a transaction: VACUUM cannot run in one. SQLite: nothing (its FTS5 index)."""
from functools import partial

from django.db import migrations


def text_search_stored(apps, schema_editor, storage: str = "MAIN"):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"ALTER TABLE knowledge_chunk ALTER COLUMN text_search SET STORAGE {storage}")
    schema_editor.execute("VACUUM FULL knowledge_chunk")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("knowledge", "0008_chunk_text_search_stored")]

    operations = [migrations.RunPython(text_search_stored, partial(text_search_stored, storage="EXTENDED"))]
