"""Embeddings, every one an LLM call: the one path for /v1/embeddings and for Chatter's own embeddings (knowledge's
documents and queries).

A request to embed texts is a run of the embeddings graph (start → embedding → end) through workflows' one run path,
so it is admitted as every call is (the model resolved as the gateway resolves it: `provider/model`, a routed model
name, or the first configured provider that prices it; the API key's model allow-list and rate limits; budgets,
which refuse it before any call when they have no room), and each provider request is an LLMCall row of kind
`embedding` with the tokens it read, priced by the one usage path, in analytics, spend and the aggregates. The run's
variable `purpose` says what it served (e.g. {"document": id} or {"query": text, "collection": id}).
"""
from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from django.conf import settings

from core.errors import ChatterError, InvalidInput
from engine.embedding_models import embeddings_refusal
from gateway.services import ResolvedModel, answered_model, gateway_admit
from workflows.models import WorkflowExecution
from workflows.services.run_requests import GatewayRequest
from workflows.services.runs import execution_run_now

EMBEDDINGS_GRAPH = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "embed", "type": "embedding"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "embed"}, {"source": "embed", "target": "end"}],
}


class EmbeddingsFailed(ChatterError):
    """An embeddings run did not complete: its provider failed (502), or a budget or limit stopped it (429). The
    run's id is in the details."""

    code = "embeddings_failed"
    status = 502


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]  # one per text, in order
    execution: WorkflowExecution  # the run: its LLM calls, tokens and cost


def embeddings_run(*, owner, api_key, texts: list, resolved: ResolvedModel, dimensions: int | None = None,
                   batch_size: int | None = None, purpose: dict | None = None) -> WorkflowExecution:
    """Run the embeddings graph for `texts` with the (provider, model) gateway_admit resolved, to its end: one LLM
    call per `batch_size` texts (all in one call without it). Returns the ended run (completed or failed)."""
    provider, model, price = resolved
    if (refusal := embeddings_refusal(provider, model)) is not None:
        raise InvalidInput(refusal, details=[{"path": "model", "code": "no_embeddings", "message": refusal}])
    config = {"provider": provider, "model": model, "system_prompt": None, "enable_memory": False,
              "enable_tools": False, "enable_retrieval": False}
    variables = {"input": texts, "dimensions": dimensions, "batch_size": batch_size,
                 **({"purpose": purpose} if purpose else {})}
    return execution_run_now(GatewayRequest(
        owner=owner, api_key=api_key, graph=EMBEDDINGS_GRAPH, config=config, variables=variables,
        prices_read={(provider, model): price}))


def embeddings_create(*, owner, model: str, texts: list[str], purpose: dict | None = None,
                      api_key=None, dimensions: int | None = None) -> Embeddings:
    """Embed `texts` with `model` for `owner` (and the API key the request came with, whose limits apply): batched
    by CHATTER_EMBEDDING_BATCH_SIZE, each batch an LLM call of kind `embedding`, all in one run that records
    `purpose` (what the vectors serve); `dimensions`: the vectors' size, for a model that makes any size. Raises
    before any call when the model is unknown (404), the key may not call it (403/429) or a budget has no room
    (429); EmbeddingsFailed when the run did not complete."""
    if not texts:
        return Embeddings([], None)
    resolved, _ = gateway_admit(api_key=api_key, model=model)
    execution = embeddings_run(owner=owner, api_key=api_key, texts=list(texts), resolved=resolved,
                               dimensions=dimensions, batch_size=settings.CHATTER_EMBEDDING_BATCH_SIZE,
                               purpose=purpose)
    completed_check(execution, doing=f"embedding with {model}")
    return Embeddings(execution.output_data["variables"]["embeddings"], execution)


def completed_check(execution: WorkflowExecution, *, doing: str, code: str = EmbeddingsFailed.code) -> None:
    """Raise EmbeddingsFailed (with `code`) unless a run of Chatter's own calls completed: 429 with the run's error
    type when a budget or limit stopped it, else 502; the run's id in the details."""
    if execution.status == WorkflowExecution.Status.COMPLETED:
        return
    failed = EmbeddingsFailed(f"{doing} failed: {execution.error_message or execution.error_type}", code=code,
                              details=[{"path": "execution_id", "code": execution.error_type or "failed",
                                        "message": str(execution.pk)}])
    if execution.error_type in ("budget_exceeded", "limit_exceeded"):
        failed.code, failed.status = execution.error_type, 429
    raise failed


def embeddings_body(execution: WorkflowExecution, *, model: str, encoding_format: str) -> dict:
    """A finished embeddings run as OpenAI's answer: a vector per input (base64: little-endian float32, as OpenAI
    encodes them), and the usage as stored with its cost."""
    vectors = execution.output_data["variables"]["embeddings"]
    if encoding_format == "base64":
        vectors = [base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() for vector in vectors]
    return {"object": "list", "model": answered_model(execution, asked=model),
            "data": [{"object": "embedding", "index": index, "embedding": vector} for index, vector in enumerate(vectors)],
            "usage": {"prompt_tokens": execution.prompt_tokens, "total_tokens": execution.total_tokens,
                      "cost": float(execution.cost)}}
