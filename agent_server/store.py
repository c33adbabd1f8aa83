"""LangGraph's store, owner-scoped: items (JSON objects) under a key in a namespace of labels."""
from __future__ import annotations

from django.db.models import Q

from agent_server.containment import rows_containing
from agent_server.models import StoreItem
from chatter_project.errors import InvalidInput, NotFound

MAX_LABELS = 20


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


def store_item_put(*, owner, namespace: list, key: str, value: dict) -> StoreItem:
    if not isinstance(value, dict):
        raise InvalidInput("an item's value is a JSON object")
    item, _ = StoreItem.objects.update_or_create(owner=owner, namespace=namespace_text(namespace), key=key,
                                                 defaults={"value": value})
    return item


def store_item_get(*, owner, namespace: list, key: str) -> StoreItem:
    item = StoreItem.objects.filter(owner=owner, namespace=namespace_text(namespace), key=key).first()
    if item is None:
        raise NotFound("item not found")
    return item


def store_item_delete(*, owner, namespace: list, key: str) -> None:
    StoreItem.objects.filter(owner=owner, namespace=namespace_text(namespace), key=key).delete()


def _under(prefix: list) -> Q:
    text = namespace_text(prefix)
    return Q(namespace=text) | Q(namespace__startswith=f"{text}.")


def store_item_search(*, owner, namespace_prefix: list, filter: dict | None = None, query: str | None = None,
                      limit: int = 10, offset: int = 0) -> list[StoreItem]:
    """Items under a namespace prefix whose value contains `filter` (agent_server.containment), and (`query`)
    whose value mentions the text; newest first."""
    items = StoreItem.objects.filter(owner=owner)
    if namespace_prefix:
        items = items.filter(_under(namespace_prefix))
    items = rows_containing(items, field="value", pattern=filter)
    found = list(items.order_by("-updated_at", "namespace", "key"))
    if query:
        needle = query.lower()
        found = [item for item in found if needle in str(item.value).lower()]
    return found[offset:offset + limit]


def store_namespaces(*, owner, prefix: list | None = None, suffix: list | None = None, max_depth: int | None = None,
                     limit: int = 100, offset: int = 0) -> list[list[str]]:
    rows = StoreItem.objects.filter(owner=owner)
    if prefix:
        rows = rows.filter(_under(prefix))
    found = set()
    for text in rows.values_list("namespace", flat=True).distinct():
        labels = text.split(".")
        if suffix and labels[-len(suffix):] != list(suffix):
            continue
        found.add(tuple(labels[:max_depth] if max_depth else labels))
    return [list(labels) for labels in sorted(found)][offset:offset + limit]
