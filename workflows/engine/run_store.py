"""A registered graph's store, used on its run's thread (python_graphs.graph_stream_run)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Iterable

from langgraph.store.base import BaseStore, Op, Result

if TYPE_CHECKING:
    from workflows.engine.python_graphs import RunThread


class StoreOnRunThread(BaseStore):
    """The run's store (LangGraph's BaseStore, given by the runner) as its graph sees it: each batch of operations
    runs on the run's thread, where the database is touched; an async node awaits it without blocking its loop."""

    def __init__(self, store: BaseStore, run_thread: RunThread):
        super().__init__()
        self.store, self.run_thread = store, run_thread

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self.run_thread.call(self.store.batch, list(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.wrap_future(self.run_thread.submit(self.store.batch, list(ops)))
