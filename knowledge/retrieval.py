"""Collections searched by runs: a retrieval node's, a Python graph's retriever (workflows.graph_knowledge).
Registered with workflows at start-up (knowledge.apps), which never imports this app: a run asks
workflows.knowledge_search, and the query's embedding is the run's own LLM call (the `embed` it hands over)."""
from __future__ import annotations

import uuid

from django.db.models import Q

from core.errors import InvalidInput
from engine.hooks import Embed, Rerank, RetrievalRequest
from knowledge.models import Collection
from knowledge.search import collection_search, hits_reranked, rerank_depth, rerank_model_resolved
from knowledge.selectors import collection_list


def collections_named(*, user, refs) -> list[Collection]:
    """The collections `refs` name (an id, else a name: the user's own first, else a shared one), as `user` sees
    them: their own and the shared ones. One they cannot see, or a name two shared collections have, is an error
    that names it (and says nothing of collections they cannot see)."""
    visible = collection_list(user=user)
    found, problems = [], []
    for ref in dict.fromkeys(refs):
        matches = []
        try:
            matches = list(visible.filter(pk=uuid.UUID(str(ref))))
        except ValueError:
            pass
        if not matches:  # a name may look like an id: looked up by name when no collection it sees has that id
            matches = list(visible.filter(owner=user, name=ref)) or list(visible.filter(Q(shared=True), name=ref))
        if len(matches) == 1:
            found.append(matches[0])
        else:
            problems.append({"path": "collections", "code": "collection_not_found" if not matches else "ambiguous",
                             "message": f"{ref!r}: " + ("no such collection of yours or shared" if not matches else
                                                        "several shared collections have this name: use its id")})
    if problems:
        raise InvalidInput("; ".join(problem["message"] for problem in problems), code="collection_not_found",
                           details=problems)
    return found


def collections_search_for_run(*, user, request: RetrievalRequest, embed: Embed, rerank: Rerank) -> list[dict]:
    """The `k` best chunks over the request's collections (each searched as knowledge.search does, merged by
    score, ties by id), each a citation with its text. The query is embedded once per embedding model; with a
    rerank model, the best of every collection are reranked together, in one call."""
    vectors: dict[str, list[list[float]]] = {}

    def embed_once(model: str, texts: list[str]) -> list[list[float]]:
        key = f"{model}\n" + "\n".join(texts)
        if key not in vectors:
            vectors[key] = embed(model, texts)
        return vectors[key]

    collections = collections_named(user=user, refs=request.collections)
    model = rerank_model_resolved(request.rerank_model) if request.rerank_model else None
    hits = []
    for collection in collections:
        hits += collection_search(collection=collection, user=user, query=request.query,
                                  k=rerank_depth(request.k) if model else request.k, mode=request.mode,
                                  score_threshold=None if model else request.score_threshold,
                                  filters=request.filters, embed=embed_once)
    hits.sort(key=lambda hit: (-hit.score, hit.chunk.pk))
    if model:
        hits = hits_reranked(hits=hits[:rerank_depth(request.k)], query=request.query, model=model, k=request.k,
                             user=user, rerank=rerank)
        if request.score_threshold is not None:
            hits = [hit for hit in hits if hit.score >= request.score_threshold]
    return [{"chunk_id": hit.chunk.pk, "document_id": str(hit.chunk.document_id) if hit.chunk.document_id else None,
             "collection_id": str(hit.chunk.collection_id), "title": hit.chunk.document.title if hit.chunk.document
             else "", "position": hit.chunk.position, "score": hit.score, "text": hit.chunk.text}
            for hit in hits[:request.k]]
