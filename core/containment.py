"""The one JSON metadata filter (/langgraph/'s, and knowledge's search): a row matches when its JSON contains the
filter, as PostgreSQL's `jsonb @>` decides (LangGraph's own server filters threads, assistants and crons that way). The
filter's keys are data: a key named `regex`, `isnull` or `a__b` matches a key of that name, never an ORM lookup."""
from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet


def json_contains(document, pattern) -> bool:
    """Whether `document` contains `pattern`: an object every pattern key with a value containing the pattern's,
    an array an element containing each pattern element, a scalar the equal scalar (true is not 1)."""
    if isinstance(pattern, dict):
        return isinstance(document, dict) and all(
            key in document and json_contains(document[key], wanted) for key, wanted in pattern.items())
    if isinstance(pattern, list):
        return isinstance(document, list) and all(
            any(json_contains(item, wanted) for item in document) for wanted in pattern)
    if isinstance(pattern, bool) or isinstance(document, bool):
        return document is pattern
    if isinstance(pattern, (int, float)) and isinstance(document, (int, float)):
        return document == pattern
    return type(document) is type(pattern) and document == pattern


def rows_containing(rows: QuerySet, *, field: str, pattern: dict | None) -> QuerySet:
    """The rows whose JSON `field` contains `pattern` (all of them when there is none). PostgreSQL decides with
    the `contains` lookup (the pattern is one bound jsonb value); SQLite has no containment operator, so the
    rows' documents are read and matched here, as PostgreSQL would."""
    if not pattern:
        return rows
    if connection.vendor == "postgresql":
        return rows.filter(**{f"{field}__contains": pattern})
    matching = [pk for pk, document in rows.values_list("pk", field) if json_contains(document, pattern)]
    return rows.filter(pk__in=matching)
