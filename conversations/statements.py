"""The writes of conversations the ORM has no form for (RETURNING, a data-modifying WITH) or makes measurably slower
on every turn (a message's INSERT), and the read of a turn's history: fixed SQL with placeholders, run by the
services and selectors (docs/architecture.md#named-statements; the figures: bench/RESULTS.md, "Named statements of
conversations").

Parameters are prepared as the model's own fields prepare them (`Field.pre_save`, then core.db.value_converter:
`Field.get_db_prep_save`'s result), so every value is stored as `save()` would store it; the column lists are the
models' concrete fields in order (a test holds them to that).
"""
from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models

from core.db import field_converters, statements_run

# message_count, the four totals, last_sequence, last_message_at; then id and, when not NULL, the owner's id.
# One statement where `update()` and `get()` are two: 234 µs against 960 on SQLite, 652 against 1,521 on PostgreSQL
# (bench/RESULTS.md, "Named statements of conversations").
CONVERSATION_MESSAGE_ADD = """
UPDATE "conversations_conversation"
SET "message_count" = "message_count" + 1,
    "prompt_tokens" = "prompt_tokens" + %s,
    "completion_tokens" = "completion_tokens" + %s,
    "total_tokens" = "total_tokens" + %s,
    "total_cost" = "total_cost" + %s,
    "last_sequence" = "last_sequence" + 1,
    "last_message_at" = %s
WHERE "id" = %s AND "owner_id" = COALESCE(%s, "owner_id")
RETURNING *
"""

# A turn's history: the newest user/assistant/system messages (`role`, `content`) of a conversation, newest first,
# before a sequence number or, when that is NULL, before the first user message of a run (nothing when it has none).
# Parameters: conversation id, sequence (or NULL), run id (or NULL), how many. One statement either way; fixed SQL
# because the queryset's building and compiling is most of its cost: 26 µs against 325 on SQLite, hot; the memory's
# phase of a continuing turn 0.28 ms against 0.80 (bench/RESULTS.md, B1 and "Named statements of conversations").
CONVERSATION_HISTORY = """
SELECT "role", "content" FROM "conversations_message"
WHERE "conversation_id" = %s AND "role" IN ('user', 'assistant', 'system')
  AND "sequence" < COALESCE(%s, (SELECT MIN("sequence") FROM "conversations_message"
                                 WHERE "execution_id" = %s AND "role" = 'user'))
ORDER BY "sequence" DESC
LIMIT %s
"""

MESSAGE_COLUMNS = (
    "prompt_tokens", "completion_tokens", "total_tokens", "id", "conversation_id", "sequence", "role", "content",
    "execution_id", "cached_prompt_tokens", "reasoning_tokens", "cost", "provider_used", "model_used",
    "finish_reason", "response_time_ms", "usage_estimated", "usage_raw", "tool_calls", "error_message", "metadata",
    "created_at",
)
# The message's own columns, without the two the conversation's row gives (conversation_id, sequence).
MESSAGE_RIDING_COLUMNS = tuple(name for name in MESSAGE_COLUMNS if name not in ("conversation_id", "sequence"))

# PostgreSQL: CONVERSATION_MESSAGE_ADD's parameters, then the message's (MESSAGE_RIDING_COLUMNS); no row, and no
# message, when there is no such conversation.
CONVERSATION_MESSAGE_ADD_WITH_MESSAGE = f"""
WITH c AS ({CONVERSATION_MESSAGE_ADD}),
m AS (
    INSERT INTO "conversations_message" (
        "prompt_tokens", "completion_tokens", "total_tokens", "id", "conversation_id", "sequence", "role",
        "content", "execution_id", "cached_prompt_tokens", "reasoning_tokens", "cost", "provider_used",
        "model_used", "finish_reason", "response_time_ms", "usage_estimated", "usage_raw", "tool_calls",
        "error_message", "metadata", "created_at")
    SELECT %s::bigint, %s::bigint, %s::bigint, %s::uuid, c."id", c."last_sequence", %s::varchar, %s::text,
        %s::uuid, %s::bigint, %s::bigint, %s::numeric, %s::varchar, %s::varchar, %s::varchar, %s::integer,
        %s::boolean, %s::jsonb, %s::jsonb, %s::text, %s::jsonb, %s::timestamptz
    FROM c
)
SELECT * FROM c
"""

CONVERSATION_COLUMNS = (
    "prompt_tokens", "completion_tokens", "total_tokens", "id", "owner_id", "title", "status", "created_at",
    "updated_at", "last_message_at", "message_count", "last_sequence", "total_cost", "metadata", "runs_queued",
)

CONVERSATION_INSERT = """
INSERT INTO "conversations_conversation" (
    "prompt_tokens", "completion_tokens", "total_tokens", "id", "owner_id", "title", "status", "created_at",
    "updated_at", "last_message_at", "message_count", "last_sequence", "total_cost", "metadata", "runs_queued")
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

MESSAGE_INSERT = """
INSERT INTO "conversations_message" (
    "prompt_tokens", "completion_tokens", "total_tokens", "id", "conversation_id", "sequence", "role", "content",
    "execution_id", "cached_prompt_tokens", "reasoning_tokens", "cost", "provider_used", "model_used",
    "finish_reason", "response_time_ms", "usage_estimated", "usage_raw", "tool_calls", "error_message", "metadata",
    "created_at")
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

# A new conversation (CONVERSATION_COLUMNS) and its first message (MESSAGE_COLUMNS): on PostgreSQL one statement
# (a data-modifying WITH), 714 µs against 1,024 for two `save()`s; on SQLite the two INSERTs, each prepared without
# the ORM's compiler (bench/RESULTS.md, "Named statements of conversations").
def conversation_open_with_message(conversation: models.Model, message: models.Model,
                                   riding: list[tuple[str, list]] = ()) -> None:
    """Insert a new conversation and its first message, and the INSERTs `riding` with them (core.db.statements_run:
    one statement on PostgreSQL)."""
    connection = connections[DEFAULT_DB_ALIAS]
    statements_run((MESSAGE_INSERT, stored_values(message, MESSAGE_COLUMNS, connection)),
                   [(CONVERSATION_INSERT, stored_values(conversation, CONVERSATION_COLUMNS, connection)), *riding])
    conversation._state.adding = message._state.adding = False  # stored (Model._state is documented)


def message_insert(message: models.Model) -> None:
    """Insert a message whose sequence is known (MESSAGE_INSERT), as `save(force_insert=True)` would store it: on
    SQLite, where no statement of the conversation's carries it, without the ORM's compiler (bench/RESULTS.md,
    "Named statements of conversations")."""
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute(MESSAGE_INSERT, stored_values(message, MESSAGE_COLUMNS, connection))
    message._state.adding = False  # stored (Model._state is documented)


def stored_values(instance: models.Model, attnames: tuple[str, ...], connection) -> list[Any]:
    """A new instance's values for `attnames`, as save(force_insert=True) sends them (auto_now fields set); a plain
    field's value as it is (core.db.passes_as_is), as core.db.Insert sends it."""
    return [getattr(instance, attname) if convert is None
            else None if (value := field.pre_save(instance, add=True)) is None else convert(value, connection)
            for attname, field, convert in field_converters(type(instance), attnames, connection.alias)]
