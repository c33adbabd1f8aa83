"""A registered graph's store, used on its run's thread (python_graphs.graph_stream_run)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable, Iterable
from uuid import UUID

from langgraph.store.base import BaseStore, Op, Result

if TYPE_CHECKING:
    from engine.graph_accounting import GraphAccounting, RunThread

# How a store embeds the texts of its index in a run: (`provider/model`, texts, dimensions or None) -> vectors, each
# request an LLM call of the run's, in the node that used the store.
StoreEmbed = Callable[[str, list[str], "int | None"], list[list[float]]]


class StoreOnRunThread(BaseStore):
    """The run's store (LangGraph's BaseStore, given by the runner) as its graph sees it: each batch of operations
    runs on the run's thread, where the database is touched; an async node awaits it without blocking its loop.
    A store whose `batch` takes `embed` (agent_server.graph_store) is handed the run's: what its index embeds is an
    LLM call of the node that put or searched."""

    def __init__(self, store: BaseStore, run_thread: RunThread, accounting: GraphAccounting | None = None):
        super().__init__()
        self.store, self.run_thread, self.accounting = store, run_thread, accounting

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self.run_thread.call(self._batch, list(ops), _caller())

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.wrap_future(self.run_thread.submit(self._batch, list(ops), _caller()))

    def _batch(self, ops: list[Op], caller: UUID | None) -> list[Result]:
        if self.accounting is None or not getattr(self.store, "embeds_in_runs", False):
            return self.store.batch(ops)
        return self.store.batch(ops, embed=self.accounting.store_embed(caller))


def _caller() -> UUID | None:
    """The LangChain run (a graph's node, or something inside one) that uses the store, when it is one."""
    from langgraph.config import get_config

    try:
        callbacks = get_config().get("callbacks")
    except RuntimeError:  # outside a runnable
        return None
    return getattr(callbacks, "parent_run_id", None)
