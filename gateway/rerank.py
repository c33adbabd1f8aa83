"""Reranking, every request an LLM call: the one path for Chatter's own reranks outside a run (a knowledge search's
rerank step; inside a run the run calls the provider itself: engine.runtime.RunContext.rerank).

A request to rerank is a run of the rerank graph (start → rerank → end) through workflows' one run path, admitted as
every call is (the model resolved as the gateway resolves it, the API key's model allow-list and limits, budgets,
which refuse it before any call when they have no room), and its provider request is an LLMCall row of kind
`rerank` with the tokens the server read, priced by the one usage path. The run's variable `purpose` says what it
served (e.g. {"query": text, "collection": id}).
"""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import InvalidInput
from engine.reranking import RERANK_PROVIDERS
from gateway.embeddings import completed_check
from gateway.services import gateway_admit
from workflows.models import WorkflowExecution
from workflows.services.run_requests import GatewayRequest
from workflows.services.runs import execution_run_now

RERANK_GRAPH = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "rerank", "type": "rerank"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "rerank"}, {"source": "rerank", "target": "end"}],
}


@dataclass(frozen=True)
class Reranked:
    scores: list[tuple[int, float]]  # (index of a document, its relevance score), most relevant first
    execution: WorkflowExecution  # the run: its LLM call, tokens and cost


def rerank_create(*, owner, model: str, query: str, documents: list[str], top_n: int, purpose: dict | None = None,
                  api_key=None) -> Reranked:
    """The `top_n` of `documents` most relevant to `query` by `model`'s rerank API, for `owner` (and the API key the
    request came with, whose limits apply): one LLM call of kind `rerank` in a run that records `purpose`. Raises
    before any call when the model is unknown (404) or has no rerank API (400), the key may not call it (403/429) or
    a budget has no room (429); when the run did not complete, gateway.embeddings.completed_check's 502 (or 429 for a
    budget or limit met in the run)."""
    (provider, name, price), _ = gateway_admit(api_key=api_key, model=model)
    if provider not in RERANK_PROVIDERS:
        raise InvalidInput(f"provider {provider!r} has no rerank API", details=[
            {"path": "rerank_model", "code": "no_rerank", "message": f"{provider} has no rerank API"}])
    config = {"provider": provider, "model": name, "system_prompt": None, "enable_memory": False,
              "enable_tools": False, "enable_retrieval": False}
    variables = {"query": query, "documents": list(documents), "top_n": top_n,
                 **({"purpose": purpose} if purpose else {})}
    execution = execution_run_now(GatewayRequest(
        owner=owner, api_key=api_key, graph=RERANK_GRAPH, config=config, variables=variables,
        prices_read={(provider, name): price}))
    completed_check(execution, doing=f"reranking with {model}", code="rerank_failed")
    return Reranked([(entry["index"], entry["relevance_score"])
                     for entry in execution.output_data["variables"]["reranked"]], execution)
