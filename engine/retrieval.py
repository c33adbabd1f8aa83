"""A search of knowledge collections inside a run, as the retrieval node and a Python graph's retriever
(workflows.graph_knowledge) do it: the query embedded by the run (each embedding an LLM call of the node's), the
chunks found reranked by the run when the request names a rerank model (an LLM call of kind `rerank`), the
search answered by the app that keeps collections through the hooks (the engine knows nothing of it), and the
retrieval recorded (its request, the chunks' ids and scores, its latency)."""
from __future__ import annotations

import time

from engine.graph import Node
from engine.hooks import CITATION_KEYS, RetrievalRequest
from engine.runtime import RunContext


def citation(chunk: dict) -> dict:
    """A chunk found, as an answer cites it."""
    return {key: chunk.get(key) for key in CITATION_KEYS}


def collections_retrieve(node: Node, ctx: RunContext, request: RetrievalRequest) -> list[dict]:
    """The chunks that best answer `request`, best first (each with CITATION_KEYS and its `text`); recorded."""
    started = time.monotonic()
    embeddings: list[dict] = []
    reranks: list[dict] = []

    def embed(model: str, texts: list[str]) -> list[list[float]]:
        provider, _, name = model.partition("/")
        ctx.checkpoint()
        vectors = ctx.embed(node, texts, provider=provider, model=name)
        embeddings.append({"model": model, "texts": len(texts)})
        return vectors

    def rerank(model: str, query: str, texts: list[str], top_n: int) -> list[tuple[int, float]]:
        provider, _, name = model.partition("/")
        ctx.checkpoint()
        scores = ctx.rerank(node, query, texts, provider=provider, model=name, top_n=top_n)
        reranks.append({"model": model, "documents": len(texts)})
        return scores

    chunks = ctx.hooks.collections_search(request, embed, rerank)
    ctx.hooks.retrieved(node, {
        "query": request.query, "collections": list(request.collections), "mode": request.mode, "k": request.k,
        **({"score_threshold": request.score_threshold} if request.score_threshold is not None else {}),
        **({"filters": request.filters} if request.filters else {}),
        **({"rerank_model": request.rerank_model} if request.rerank_model else {}),
        "chunks": [citation(chunk) for chunk in chunks], "embeddings": embeddings,
        **({"reranks": reranks} if request.rerank_model else {}),
        "latency_ms": int((time.monotonic() - started) * 1000)})
    return chunks
