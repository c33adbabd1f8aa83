"""LangGraph's store, owner-scoped: items (JSON objects) under a key in a namespace of labels, with the semantics of
LangGraph's BaseStore as its server serves them: a missing item is None, a search filter may compare a field
(`{"score": {"$gte": 4}}`), and a namespace listing's prefix or suffix may hold "*" for any one label.

With an index (agent_server.store_index) the store searches by meaning, as LangGraph's PostgresStore does: a put
embeds the texts at the index's JSON paths (or its own `index` paths; none with `index=False`) and keeps one vector
each (StoreVector), replacing the item's previous ones; a search with `query` ranks the items that have vectors by
their best vector's cosine similarity to the query's (`score`), highest first. Without an index, `query` keeps the
items whose value mentions it."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Min, Q

from core.containment import json_contains, rows_containing
from agent_server.models import StoreItem, StoreVector
from agent_server.store_index import index_paths, item_texts, store_index, texts_embed
from core.errors import InvalidInput
from knowledge.vectors import CosineDistance

if TYPE_CHECKING:
    from engine.run_store import StoreEmbed

MAX_LABELS = 20
ANY_LABEL = "*"
# LangGraph's comparison operators in a store search filter. Ordering compares numbers with numbers and text with
# text; a field the item lacks, or of another kind, matches none of them (as PostgreSQL's store decides).
COMPARISONS = {"$eq": None, "$ne": None, "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt,
               "$lte": operator.le}


def namespace_text(labels) -> str:
    if not isinstance(labels, (list, tuple)) or not labels or len(labels) > MAX_LABELS:
        raise InvalidInput(f"a namespace is a list of 1 to {MAX_LABELS} labels")
    for label in labels:
        if not isinstance(label, str) or not label or "." in label:
            raise InvalidInput("namespace labels are non-empty text without '.'")
    return ".".join(labels)


def item_as_dict(item: StoreItem) -> dict:
    return {"namespace": item.namespace.split("."), "key": item.key, "value": item.value,
            "created_at": item.created_at, "updated_at": item.updated_at}


def store_item_put(*, owner, namespace: list, key: str, value: dict, index: list[str] | bool | None = None,
                   api_key=None, embed: StoreEmbed | None = None) -> StoreItem:
    """The item, written with its vectors (the store has an index and `index` is not False) in one transaction;
    the texts are embedded first (the owner's LLM calls, held to their budgets and `api_key`'s limits; in a run,
    through its `embed`: store_index.texts_embed), so a failed or refused embedding writes nothing."""
    if not isinstance(value, dict):
        raise InvalidInput("an item's value is a JSON object")
    labels, namespace = list(namespace), namespace_text(namespace)
    if labels[0] == "langgraph":  # as LangGraph's stores refuse it: the root its own items live under
        raise InvalidInput('a namespace\'s first label cannot be "langgraph" (LangGraph reserves it)')
    config = store_index()
    texts = item_texts(value, index_paths(config, index)) if config is not None else []
    vectors = texts_embed(config, [text for _, text in texts], owner=owner, api_key=api_key, embed=embed,
                          purpose={"store_item": {"namespace": labels, "key": key}}) if texts else []
    with transaction.atomic():
        item, _ = StoreItem.objects.update_or_create(owner=owner, namespace=namespace, key=key,
                                                     defaults={"value": value})
        item.vectors.all().delete()
        StoreVector.objects.bulk_create([
            StoreVector(item=item, field=field, model=config.embed, dimensions=len(vector), embedding=vector)
            for (field, _), vector in zip(texts, vectors) if _has_direction(vector)])
    return item


def _has_direction(vector: list[float]) -> bool:
    """Whether cosine similarity can compare the vector: a zero vector (the lexical model's, of a text without a
    word) has no direction, and both databases answer no distance for it."""
    return any(vector)


def store_item_get(*, owner, namespace: list, key: str) -> StoreItem | None:
    return StoreItem.objects.filter(owner=owner, namespace=namespace_text(namespace), key=key).first()


def store_item_delete(*, owner, namespace: list, key: str) -> None:
    StoreItem.objects.filter(owner=owner, namespace=namespace_text(namespace), key=key).delete()


def _under(prefix: list) -> Q:
    text = namespace_text(prefix)
    return Q(namespace=text) | Q(namespace__startswith=f"{text}.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _comparisons(filter: dict | None) -> tuple[dict, dict]:
    """(the filter's plain fields, matched by containment; its compared fields: {field: {operator: value}})."""
    plain, compared = {}, {}
    for field, wanted in (filter or {}).items():
        if isinstance(wanted, dict) and wanted and all(name.startswith("$") for name in wanted):
            for name, value in wanted.items():
                if name not in COMPARISONS:
                    raise InvalidInput(f"filter.{field}: unknown operator {name!r}; known: {', '.join(COMPARISONS)}")
                if COMPARISONS[name] is not None and not (_is_number(value) or isinstance(value, str)):
                    raise InvalidInput(f"filter.{field}.{name} compares a number or a text")
            compared[field] = wanted
        else:
            plain[field] = wanted
    return plain, compared


def _compares(document: dict, field: str, conditions: dict) -> bool:
    if field not in document:
        return False
    found = document[field]
    for name, wanted in conditions.items():
        if name in ("$eq", "$ne"):
            equal = json_contains(found, wanted) and json_contains(wanted, found)
            if equal != (name == "$eq"):
                return False
        elif not (_is_number(found) and _is_number(wanted) or isinstance(found, str) and isinstance(wanted, str)):
            return False
        elif not COMPARISONS[name](found, wanted):
            return False
    return True


def store_item_search(*, owner, namespace_prefix: list, filter: dict | None = None, query: str | None = None,
                      limit: int = 10, offset: int = 0, api_key=None, embed: StoreEmbed | None = None
                      ) -> list[tuple[StoreItem, float | None]]:
    """(item, score) for the items under a namespace prefix whose value contains the filter's plain fields
    (core.containment) and passes its compared ones: with a `query` and an index, those with vectors, most
    similar first (score: the cosine similarity of their nearest vector); else newest first (score None), and a
    `query` keeps those that mention it. The query's embedding is the owner's LLM call, as a put's are."""
    plain, compared = _comparisons(filter)
    items = StoreItem.objects.filter(owner=owner)
    if namespace_prefix:
        items = items.filter(_under(namespace_prefix))
    items = rows_containing(items, field="value", pattern=plain)
    config = store_index()
    if query and config is not None:
        vector = texts_embed(config, [query], owner=owner, api_key=api_key, embed=embed,
                             purpose={"store_query": query[:500]})[0]
        if not _has_direction(vector):
            return []
        return _ranked(items, compared, vector=vector, model=config.embed, limit=limit, offset=offset)
    found = list(items.order_by("-updated_at", "namespace", "key"))
    if compared:
        found = [item for item in found if _passes(item, compared)]
    if query:
        needle = query.lower()
        found = [item for item in found if needle in str(item.value).lower()]
    return [(item, None) for item in found[offset:offset + limit]]


def _passes(item: StoreItem, compared: dict) -> bool:
    return all(_compares(item.value, field, conditions) for field, conditions in compared.items())


def _ranked(items, compared: dict, *, vector: list[float], model: str, limit: int, offset: int
            ) -> list[tuple[StoreItem, float]]:
    """The items nearest to `vector` by their nearest vector of `model`, exactly (every vector of the owner's
    matching items is compared); the compared filters, read here, before the page is cut."""
    nearest = (StoreVector.objects.filter(item__in=items.values("pk"), model=model, dimensions=len(vector))
               .values("item").annotate(distance=Min(CosineDistance("embedding", vector)))
               .order_by("distance", "item"))
    if not compared:
        nearest = nearest[offset:offset + limit]
    ranked = [(row["item"], row["distance"]) for row in nearest]
    by_id = StoreItem.objects.in_bulk([item_id for item_id, _ in ranked])
    found = [(by_id[item_id], 1.0 - distance) for item_id, distance in ranked]
    if compared:
        found = [(item, score) for item, score in found if _passes(item, compared)][offset:offset + limit]
    return found


def _labels_match(labels: list[str], pattern: list[str]) -> bool:
    return len(labels) == len(pattern) and all(want in (ANY_LABEL, label) for label, want in zip(labels, pattern))


def store_namespaces(*, owner, prefix: list | None = None, suffix: list | None = None, max_depth: int | None = None,
                     limit: int = 100, offset: int = 0) -> list[list[str]]:
    """The owner's namespaces (cut to `max_depth` labels), those starting with `prefix` and ending with `suffix`,
    where a "*" label matches any one label."""
    rows = StoreItem.objects.filter(owner=owner)
    if prefix:
        namespace_text(prefix)
        literal = prefix[:prefix.index(ANY_LABEL)] if ANY_LABEL in prefix else prefix
        if literal:
            rows = rows.filter(_under(literal))
    if suffix:
        namespace_text(suffix)
    found = set()
    for text in rows.values_list("namespace", flat=True).distinct():
        labels = text.split(".")
        if prefix and not _labels_match(labels[:len(prefix)], prefix):
            continue
        if suffix and not _labels_match(labels[-len(suffix):], suffix):
            continue
        found.add(tuple(labels[:max_depth] if max_depth else labels))
    return [list(labels) for labels in sorted(found)][offset:offset + limit]
