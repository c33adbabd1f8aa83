"""The store a registered graph's run is given (CHATTER_GRAPH_STORE): LangGraph's BaseStore over its run owner's
items, the ones /langgraph/store/ serves that user, through the same services (agent_server.store). A node reads it
as LangGraph's server hands it over (a `store` argument, `get_store()`, the runtime's): `await store.aput(...)`,
`await store.asearch(namespace, query=..., filter=..., limit=...)` (by meaning, with an index), `aget`, `adelete`,
`alist_namespaces`. Items do not expire: an operation's `ttl` and `refresh_ttl` are ignored, as /langgraph/ does.
What its index embeds (a put's texts, a search's query) is an LLM call of the run's owner: in the node that used the
store (the run hands over its `embed`: engine.run_store), else a run of its own, as /langgraph/store/'s.

Its operations touch the database, so the engine calls them on the run's own thread (graph_accounting.RunThread)."""
from __future__ import annotations

from typing import Iterable

from channels.db import database_sync_to_async
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from agent_server import store
from agent_server.models import StoreItem
from engine.run_store import StoreEmbed


def _item(row: StoreItem) -> Item:
    return Item(value=row.value, key=row.key, namespace=tuple(row.namespace.split(".")), created_at=row.created_at,
                updated_at=row.updated_at)


class OwnerStore(BaseStore):
    """An owner's store items as LangGraph's BaseStore."""

    embeds_in_runs = True  # batch takes the run's `embed` (engine.run_store.StoreOnRunThread)

    def __init__(self, *, owner):
        super().__init__()
        self.owner = owner

    def batch(self, ops: Iterable[Op], *, embed: StoreEmbed | None = None) -> list[Result]:
        return [self._one(op, embed) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await database_sync_to_async(self.batch)(list(ops))

    def _one(self, op: Op, embed: StoreEmbed | None) -> Result:
        if isinstance(op, GetOp):
            row = store.store_item_get(owner=self.owner, namespace=list(op.namespace), key=op.key)
            return None if row is None else _item(row)
        if isinstance(op, PutOp):
            if op.value is None:
                store.store_item_delete(owner=self.owner, namespace=list(op.namespace), key=op.key)
            else:
                store.store_item_put(owner=self.owner, namespace=list(op.namespace), key=op.key,
                                     value=dict(op.value), index=op.index, embed=embed)
            return None
        if isinstance(op, SearchOp):
            found = store.store_item_search(owner=self.owner, namespace_prefix=list(op.namespace_prefix),
                                            filter=op.filter, query=op.query, limit=op.limit, offset=op.offset,
                                            embed=embed)
            return [SearchItem(namespace=tuple(row.namespace.split(".")), key=row.key, value=row.value,
                               created_at=row.created_at, updated_at=row.updated_at, score=score)
                    for row, score in found]
        if isinstance(op, ListNamespacesOp):
            match = {condition.match_type: list(condition.path) for condition in op.match_conditions or ()}
            return [tuple(labels) for labels in store.store_namespaces(
                owner=self.owner, prefix=match.get("prefix"), suffix=match.get("suffix"), max_depth=op.max_depth,
                limit=op.limit, offset=op.offset)]
        raise TypeError(f"unknown store operation {type(op).__name__}")
