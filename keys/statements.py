"""The key lookup every API request makes on PostgreSQL (keys.services.api_token_get), as one fixed statement: the
live key's row and its user's, joined. The ORM's queryset for it (select_related, an OR on the expiry) costs three
times the statement on every request (bench/RESULTS.md, "Named statements of conversations, budgets and keys"). psycopg hands back each
column as its field's Python value (Django has it hand jsonb over as text, which the JSON field's documented
`from_db_value` parses), so the rows become model instances through `Model.from_db` as the ORM makes them. On
SQLite, whose values need the backend's own conversions, the ORM looks the key up. tests/keys/test_statements.py."""
from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections

from core.db import field_values
from keys.models import ApiToken


@functools.cache
def _columns() -> tuple[list[str], list[str]]:
    """The attnames of a key's columns and of its user's (the user model is the project's setting)."""
    return ([field.attname for field in ApiToken._meta.concrete_fields],
            [field.attname for field in get_user_model()._meta.concrete_fields])


@functools.cache
def key_live_sql() -> str:
    """KEY_LIVE's text: the key by its digest, not revoked, not expired at the moment given, with its user."""
    token_columns, user_columns = _columns()
    user_table = get_user_model()._meta.db_table
    user_pk = get_user_model()._meta.pk.column
    token_fields = [ApiToken._meta.get_field(name).column for name in token_columns]
    user_fields = [get_user_model()._meta.get_field(name).column for name in user_columns]
    return (
        "SELECT " + ", ".join(f'"k"."{column}"' for column in token_fields) + ", "
        + ", ".join(f'"u"."{column}"' for column in user_fields)
        + f' FROM "{ApiToken._meta.db_table}" AS "k" INNER JOIN "{user_table}" AS "u" ON "u"."{user_pk}" = "k"."user_id"'
        ' WHERE "k"."digest" = %s AND "k"."revoked_at" IS NULL AND ("k"."expires_at" IS NULL OR "k"."expires_at" > %s)'
        " LIMIT 1")


def key_live(*, digest: str, now) -> ApiToken | None:
    """PostgreSQL: the live key whose digest is `digest` at `now`, with its user; None when there is none."""
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute(key_live_sql(), [digest, now])
        row = cursor.fetchone()
    if row is None:
        return None
    token_columns, user_columns = _columns()
    token = ApiToken.from_db(DEFAULT_DB_ALIAS, token_columns, field_values(ApiToken, token_columns, row, connection))
    user_model = get_user_model()
    token.user = user_model.from_db(DEFAULT_DB_ALIAS, user_columns,
                                    field_values(user_model, user_columns, row[len(token_columns):], connection))
    return token
