"""The search of knowledge collections, as runs ask for it (a retrieval node's, a Python graph's retriever).
Collections are kept above workflows (the knowledge app), so that app registers its search here at start-up
(knowledge.apps.KnowledgeConfig.ready), as prices are registered (workflows.pricing); workflows never imports it."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.errors import InvalidInput, RunError
from engine.hooks import Embed, Rerank, RetrievalRequest


class CollectionsSearch(Protocol):
    def __call__(self, *, user, request: RetrievalRequest, embed: Embed, rerank: Rerank) -> list[dict]: ...


class CollectionsCheck(Protocol):
    # Raises InvalidInput naming each of `refs` (ids or names) that `user` cannot see.
    def __call__(self, *, user, refs: Sequence[str]) -> None: ...


_search: CollectionsSearch | None = None
_check: CollectionsCheck | None = None


def collections_search_register(search: CollectionsSearch, *, check: CollectionsCheck) -> None:
    """Make `search` the one runs ask, and `check` the one graphs are checked by (the last registered win)."""
    global _search, _check
    _search, _check = search, check


def collections_check(*, user, refs: Sequence[str]) -> None:
    """A 400 naming each collection of `refs` that `user` cannot see (as a graph is kept or run)."""
    if _check is None:
        raise InvalidInput("no knowledge collections can be searched: add 'knowledge' to INSTALLED_APPS")
    _check(user=user, refs=refs)


def collections_search(*, user, request: RetrievalRequest, embed: Embed, rerank: Rerank) -> list[dict]:
    """The chunks of the request's collections (as `user` sees them) that best answer it, best first."""
    if _search is None:
        raise RunError("no knowledge collections can be searched: add 'knowledge' to INSTALLED_APPS",
                       error_type="collection_not_found")
    return _search(user=user, request=request, embed=embed, rerank=rerank)
