"""The search of knowledge collections, as runs ask for it (a retrieval node's, a Python graph's retriever).
Collections are kept above workflows (the knowledge app), so that app registers its search here at start-up
(knowledge.apps.KnowledgeConfig.ready), as prices are registered (workflows.pricing); workflows never imports it."""
from __future__ import annotations

from typing import Protocol

from core.errors import RunError
from workflows.engine.hooks import Embed, RetrievalRequest


class CollectionsSearch(Protocol):
    def __call__(self, *, user, request: RetrievalRequest, embed: Embed) -> list[dict]: ...


_search: CollectionsSearch | None = None


def collections_search_register(search: CollectionsSearch) -> None:
    """Make `search` the one runs ask (the last registered wins)."""
    global _search
    _search = search


def collections_search(*, user, request: RetrievalRequest, embed: Embed) -> list[dict]:
    """The chunks of the request's collections (as `user` sees them) that best answer it, best first."""
    if _search is None:
        raise RunError("no knowledge collections can be searched: add 'knowledge' to INSTALLED_APPS",
                       error_type="collection_not_found")
    return _search(user=user, request=request, embed=embed)
