"""Which models have an embeddings API, as far as the providers know it (docs/knowledge.md#embedding-models).

`openai` has one (any OpenAI-compatible server: which of its models embed, the server alone says, answering the
call); `anthropic` has none; `local` embeds with its embedding models, all-MiniLM-L6-v2 and local-embed-1, and its
local-echo-1 is a chat model. A deployment of the deployments file is called as its provider.
"""
from __future__ import annotations

from engine.embeddings_local import LOCAL_EMBEDDING_MODELS
from engine.embeddings_minilm import MINILM_MODEL

EMBEDDING_PROVIDERS = ("local", "openai")
LOCAL_EMBEDDING_MODELS_ALL = (MINILM_MODEL, *LOCAL_EMBEDDING_MODELS)


def embeddings_refusal(provider: str, model: str) -> str | None:
    """Why `provider`'s `model` cannot be asked for embeddings; None when it can (or, for an OpenAI-compatible
    server's model, when only its server can say)."""
    if provider not in EMBEDDING_PROVIDERS:
        return f"provider {provider!r} has no embeddings API"
    if provider == "local" and model not in LOCAL_EMBEDDING_MODELS_ALL:
        return (f"local/{model} has no embeddings API: the local provider embeds with "
                f"{', '.join(LOCAL_EMBEDDING_MODELS_ALL)}")
    return None
