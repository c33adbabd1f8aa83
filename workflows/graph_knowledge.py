"""Knowledge collections for a registered Python graph (CHATTER_GRAPHS): the retrieval node's search as a LangChain
retriever (`collections_retriever`), or as a tool a model may call (`collections_tool`); usage in
docs/knowledge.md#python-graphs.

The search is the run's owner's, done by the run: the query's embedding is an LLM call of the node that searched,
the search a `retrieval` event, as a retrieval node's (engine.retrieval). Each Document's metadata is its
citation. Outside a Chatter run there is no owner: searching is an error.
"""
from __future__ import annotations

from typing import Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, create_retriever_tool
from pydantic import Field

from core.errors import RunError
from engine.graph_accounting import GraphAccounting
from engine.hooks import RetrievalRequest
from engine.retrieval import citation


class CollectionsRetriever(BaseRetriever):
    """The chunks of `collections` that best answer a query, as Documents (their text; their citation as
    metadata)."""

    collections: list[str] = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"
    score_threshold: float | None = None
    filters: dict | None = None
    rerank_model: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        # The run that runs the graph is among the callbacks it was handed (LangChain passes them to every call).
        accounting = next((handler for handler in run_manager.handlers if isinstance(handler, GraphAccounting)), None)
        if accounting is None:
            raise RunError("knowledge collections are searched inside a Chatter run (a registered graph's)")
        request = RetrievalRequest(query=query, collections=tuple(self.collections), k=self.k, mode=self.mode,
                                   score_threshold=self.score_threshold, filters=self.filters,
                                   rerank_model=self.rerank_model)
        chunks = accounting.collections_search(run_manager.run_id, request)
        return [Document(page_content=chunk["text"], metadata=citation(chunk)) for chunk in chunks]


def collections_retriever(collections: list[str], **options) -> CollectionsRetriever:
    """A retriever of `collections` (ids or names); `options`: k, mode, score_threshold, filters, rerank_model."""
    return CollectionsRetriever(collections=list(collections), **options)


def collections_tool(collections: list[str], *, name: str = "search_knowledge",
                     description: str = "Search the knowledge collections for passages that answer a query.",
                     **options) -> BaseTool:
    """The retriever of `collections` as a tool (its answer: the chunks' text, best first); a call of it is a tool
    call of the run, and its search a retrieval."""
    return create_retriever_tool(collections_retriever(collections, **options), name, description)
