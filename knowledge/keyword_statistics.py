"""SQLite: each collection's own word statistics for BM25 (knowledge.keyword_search), kept by triggers on
`knowledge_chunk` in the transaction that writes the chunks (every path: bulk inserts, cascades, the re-embedding's
swap), so they are exact whatever commits, and never count another collection's chunks
(docs/knowledge.md#keyword-ranking):

- `knowledge_collection_text`: a collection's chunks and their characters (N and the average length);
- `knowledge_collection_words`: how many of a collection's chunks hold each term (its document frequency);
- `knowledge_chunk_length`: each chunk's collection and characters, a narrow row read per posting.

A term is a token as the FTS5 index makes it (`porter unicode61`): a trigger puts the chunk's text alone in a
contentless FTS5 table (`knowledge_chunk_words`) and reads its terms from an `fts5vocab` table, then empties it.
FTS5's own `fts5vocab` of the whole index counts every user's chunks at once, so it cannot give these.

Django rebuilds a table for some schema changes on SQLite, which drops its triggers: `keyword_statistics_ensure`
(after every `migrate`) puts them back and recounts. `manage.py knowledge_keyword_statistics` checks and rebuilds.
PostgreSQL ranks by its own full-text search (ts_rank_cd, of the chunk and the query alone): nothing is kept there.
"""
from __future__ import annotations

from collections import Counter

TOKENIZER = "porter unicode61"  # the FTS5 index's (migration 0003)

TABLES = (
    "CREATE TABLE IF NOT EXISTS knowledge_collection_text (collection_id TEXT PRIMARY KEY, "
    "chunks INTEGER NOT NULL, characters INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS knowledge_collection_words (collection_id TEXT NOT NULL, term TEXT NOT NULL, "
    "chunks INTEGER NOT NULL, PRIMARY KEY (collection_id, term)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS knowledge_chunk_length (chunk_id INTEGER PRIMARY KEY, collection_id TEXT NOT NULL, "
    "characters INTEGER NOT NULL)",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_words USING fts5(text, content='', tokenize='{TOKENIZER}')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_words_vocab USING fts5vocab(knowledge_chunk_words, row)",
    # The index's postings with each match's position: a term's chunks and how often it is in each.
    "CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_chunk_terms USING fts5vocab(knowledge_chunk_fts, instance)",
)
_DROP_TABLES = ("knowledge_chunk_terms", "knowledge_chunk_words_vocab", "knowledge_chunk_words",
                "knowledge_chunk_length", "knowledge_collection_words", "knowledge_collection_text")

# A chunk leaving its collection (OLD) and joining one (NEW); a chunk in no collection (staged) counts nowhere.
_REMOVED = (
    "DELETE FROM knowledge_chunk_length WHERE chunk_id = OLD.id; "
    "UPDATE knowledge_collection_text SET chunks = chunks - 1, characters = characters - length(OLD.text) "
    "WHERE collection_id = OLD.collection_id; "
    "DELETE FROM knowledge_collection_text WHERE collection_id = OLD.collection_id AND chunks = 0; "
    "INSERT INTO knowledge_chunk_words(rowid, text) SELECT 1, OLD.text WHERE OLD.collection_id IS NOT NULL; "
    "UPDATE knowledge_collection_words SET chunks = chunks - 1 WHERE collection_id = OLD.collection_id "
    "AND term IN (SELECT term FROM knowledge_chunk_words_vocab); "
    "DELETE FROM knowledge_collection_words WHERE collection_id = OLD.collection_id AND chunks = 0 "
    "AND term IN (SELECT term FROM knowledge_chunk_words_vocab); "
    "INSERT INTO knowledge_chunk_words(knowledge_chunk_words) VALUES ('delete-all'); "
)
_ADDED = (
    "INSERT INTO knowledge_chunk_length(chunk_id, collection_id, characters) "
    "SELECT NEW.id, NEW.collection_id, length(NEW.text) WHERE NEW.collection_id IS NOT NULL; "
    "INSERT INTO knowledge_collection_text(collection_id, chunks, characters) "
    "SELECT NEW.collection_id, 1, length(NEW.text) WHERE NEW.collection_id IS NOT NULL "
    "ON CONFLICT(collection_id) DO UPDATE SET chunks = chunks + 1, characters = characters + excluded.characters; "
    "INSERT INTO knowledge_chunk_words(rowid, text) SELECT 1, NEW.text WHERE NEW.collection_id IS NOT NULL; "
    "INSERT INTO knowledge_collection_words(collection_id, term, chunks) "
    "SELECT NEW.collection_id, term, 1 FROM knowledge_chunk_words_vocab WHERE true "
    "ON CONFLICT(collection_id, term) DO UPDATE SET chunks = chunks + 1; "
    "INSERT INTO knowledge_chunk_words(knowledge_chunk_words) VALUES ('delete-all'); "
)
TRIGGERS = {
    "knowledge_chunk_words_insert": "AFTER INSERT ON knowledge_chunk BEGIN " + _ADDED + "END",
    "knowledge_chunk_words_delete": "AFTER DELETE ON knowledge_chunk BEGIN " + _REMOVED + "END",
    "knowledge_chunk_words_update": "AFTER UPDATE OF text, collection_id ON knowledge_chunk BEGIN "
                                    + _REMOVED + _ADDED + "END",
}
_TABLE_PRESENT = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'knowledge_collection_text'"
_TRIGGERS_PRESENT = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'knowledge_chunk_words_%'"

# A connection's own FTS5 table (temp: a search writes nothing to the database) that turns texts into the index's
# terms: a query's words, the texts of a search's candidates, a collection's texts when recounted.
TOKENS_CREATE = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.knowledge_tokens USING fts5(text, content='', tokenize='{TOKENIZER}')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.knowledge_tokens_terms USING fts5vocab(temp, knowledge_tokens, instance)",
)
TOKENS_INSERT = "INSERT INTO temp.knowledge_tokens(rowid, text) VALUES (%s, %s)"
TOKENS_READ = "SELECT doc, term FROM temp.knowledge_tokens_terms"
TOKENS_READ_TERMS = TOKENS_READ + " WHERE term IN ({terms})"
TOKENS_EMPTY = "INSERT INTO temp.knowledge_tokens(knowledge_tokens) VALUES ('delete-all')"

_STORED_TEXT = "SELECT collection_id, chunks, characters FROM knowledge_collection_text"
_STORED_WORDS = "SELECT collection_id, term, chunks FROM knowledge_collection_words"
_STORED_LENGTHS = "SELECT chunk_id, collection_id, characters FROM knowledge_chunk_length"
_CHUNKS = "SELECT id, collection_id, text FROM knowledge_chunk WHERE collection_id IS NOT NULL ORDER BY collection_id"


def tokens(cursor, texts: dict[int, str], *, terms: list[str] | None = None) -> dict[int, Counter]:
    """Each text's terms as the index makes them (only `terms` when given), with how often each is in it, by the
    text's key."""
    for statement in TOKENS_CREATE:
        cursor.execute(statement)
    try:
        cursor.executemany(TOKENS_INSERT, list(texts.items()))
        if terms is None:
            cursor.execute(TOKENS_READ)
        else:
            cursor.execute(TOKENS_READ_TERMS.format(terms=", ".join(["%s"] * len(terms))), terms)
        found: dict[int, Counter] = {key: Counter() for key in texts}
        for key, term in cursor.fetchall():
            found[key][term] += 1
        return found
    finally:
        cursor.execute(TOKENS_EMPTY)


def _counted(cursor) -> tuple[dict, dict, dict]:
    """The statistics as the chunk rows say: per collection (chunks, characters), per (collection, term) chunks,
    per chunk (collection, characters)."""
    cursor.execute(_CHUNKS)
    rows = cursor.fetchall()
    text: dict[str, list[int]] = {}
    lengths = {chunk_id: (collection_id, len(body)) for chunk_id, collection_id, body in rows}
    for collection_id, length in lengths.values():
        totals = text.setdefault(collection_id, [0, 0])
        totals[0] += 1
        totals[1] += length
    words: Counter = Counter()
    for chunk_id, terms in tokens(cursor, {chunk_id: body for chunk_id, _, body in rows}).items():
        words.update((lengths[chunk_id][0], term) for term in terms)
    return {key: tuple(value) for key, value in text.items()}, dict(words), lengths


def _stored(cursor) -> tuple[dict, dict, dict]:
    cursor.execute(_STORED_TEXT)
    text = {collection_id: (chunks, characters) for collection_id, chunks, characters in cursor.fetchall()}
    cursor.execute(_STORED_WORDS)
    words = {(collection_id, term): chunks for collection_id, term, chunks in cursor.fetchall()}
    cursor.execute(_STORED_LENGTHS)
    lengths = {chunk_id: (collection_id, characters) for chunk_id, collection_id, characters in cursor.fetchall()}
    return text, words, lengths


def keyword_statistics_drift(*, using) -> list[str]:
    """What the stored statistics say that the chunk rows do not (empty when exact); SQLite only."""
    with using.cursor() as cursor:
        stored, counted = _stored(cursor), _counted(cursor)
    drift = []
    for name, have, want in zip(("collection", "word", "chunk"), stored, counted):
        for key in sorted(set(have) | set(want), key=str):
            if have.get(key) != want.get(key):
                drift.append(f"{name} {key}: stored {have.get(key)}, counted {want.get(key)}")
    return drift


def keyword_statistics_rebuild(*, using) -> None:
    """The statistics recounted from the chunk rows, in one transaction (writers wait)."""
    with using.cursor() as cursor:
        text, words, lengths = _counted(cursor)
        for table in ("knowledge_collection_text", "knowledge_collection_words", "knowledge_chunk_length"):
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - the module's own table names
        cursor.executemany("INSERT INTO knowledge_collection_text VALUES (%s, %s, %s)",
                           [(key, *value) for key, value in text.items()])
        cursor.executemany("INSERT INTO knowledge_collection_words VALUES (%s, %s, %s)",
                           [(*key, value) for key, value in words.items()])
        cursor.executemany("INSERT INTO knowledge_chunk_length VALUES (%s, %s, %s)",
                           [(key, *value) for key, value in lengths.items()])


def keyword_statistics_ensure(*, using, create: bool = False) -> None:
    """The triggers in place (idempotent) where the statistics exist (made with them when `create`: the migration);
    recounted when a trigger was missing (a migration rebuilt the chunk table, or the statistics are new)."""
    if using.vendor != "sqlite":
        return
    with using.cursor() as cursor:
        cursor.execute(_TABLE_PRESENT)
        if cursor.fetchone() is None and not create:
            return  # the migration that makes them has not run (or was reversed)
        for statement in TABLES:
            cursor.execute(statement)
        cursor.execute(_TRIGGERS_PRESENT)
        present = {name for (name,) in cursor.fetchall()}
        for name, body in TRIGGERS.items():
            cursor.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
    if present != set(TRIGGERS):
        keyword_statistics_rebuild(using=using)


def keyword_statistics_drop(*, using) -> None:
    if using.vendor != "sqlite":
        return
    with using.cursor() as cursor:
        for name in TRIGGERS:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        for table in _DROP_TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
