"""Reranking through a provider (RunContext.rerank): documents scored against a query by a rerank model."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import InvalidInput, ProviderError
from engine.providers import openai_client, provider_check

if TYPE_CHECKING:
    from engine.routing import Deployment

# Providers with a rerank API: an OpenAI-compatible server's `/rerank` (Cohere's and Jina's shape, which llama.cpp's
# server speaks when started with --reranking, as do vLLM and Infinity).
RERANK_PROVIDERS = ("openai",)


@dataclass(frozen=True)
class Reranked:
    scores: list[tuple[int, float]]  # (index of a document, its relevance score), most relevant first
    model: str  # as the server reported it
    usage: dict  # the provider's usage object, as sent ({} when it sent none)


def rerank_create(*, provider: str, model: str, query: str, documents: list[str], top_n: int, timeout_s: float,
                  deployment: Deployment | None = None) -> Reranked:
    """The `top_n` of `documents` most relevant to `query`, by the provider's rerank API: POST <base URL>/rerank
    {"model", "query", "documents", "top_n"} -> {"results": [{"index", "relevance_score"}], "usage"}, each document
    once. An answer of another shape is a ProviderError. `deployment`: as for chat_model."""
    if deployment is None:
        provider_check(provider)
    else:
        provider, model = deployment.provider, deployment.model
    if provider not in RERANK_PROVIDERS:
        raise InvalidInput(f"provider {provider!r} has no rerank API", details=[
            {"path": "rerank_model", "code": "no_rerank", "message": f"{provider} has no rerank API"}])
    answer = openai_client(deployment, timeout_s).post(
        "/rerank", cast_to=object, body={"model": model, "query": query, "documents": documents, "top_n": top_n})
    try:
        scores = [(_index(result["index"]), float(result["relevance_score"])) for result in answer["results"]]
    except (TypeError, KeyError, ValueError) as exc:
        raise ProviderError(f"{provider}'s rerank answer has no results of index and relevance_score "
                            f"({type(exc).__name__}: {exc})", error_type="provider_error") from None
    if any(not 0 <= index < len(documents) for index, _ in scores):
        raise ProviderError(f"{provider}'s rerank answer names a document it was not sent", error_type="provider_error")
    if not all(math.isfinite(score) for _, score in scores):  # NaN, Infinity: no score to rank by, nor to store
        raise ProviderError(f"{provider}'s rerank answer has a relevance_score that is no finite number",
                            error_type="provider_error")
    best: dict[int, float] = {}  # a document the answer names twice counts once, at its best score
    for index, score in scores:
        best[index] = max(score, best.get(index, score))
    scores = sorted(best.items(), key=lambda scored: -scored[1])
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return Reranked(scores[:top_n], str(answer.get("model") or model), usage)


def _index(index) -> int:
    """A result's `index`, a JSON integer: `true` or `0.9` names no document (Python reads them as 1 and 0)."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index {index!r} is not an integer")
    return index
