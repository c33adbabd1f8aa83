"""The store's index, for search by meaning: which texts of an item are embedded, and the model that embeds them.

Configured as LangGraph's server takes it (IndexConfig: `dims`, `embed`, `fields`; CHATTER_STORE_INDEX, or
langgraph.json's `store.index`), with `embed` a "provider:model" text naming an embeddings model of Chatter's
providers: `openai:<model>` (any OpenAI-compatible /v1/embeddings upstream, OPENAI_BASE_URL), `local:all-MiniLM-L6-v2`
(the real small model, in process on CPU) or `local:local-embed-1` (lexical, for tests and demos).
An item's texts are found as LangGraph's stores find them (its `get_text_at_path`): a JSON path ("$" is the whole
value) gives one text, or several ("tags[*]"), each embedded apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.errors import InvalidInput, UpstreamFailed
from engine.embedding_models import embeddings_refusal
from engine.embeddings_minilm import MINILM_DIMENSIONS, MINILM_MODEL
from engine.providers import provider_check

if TYPE_CHECKING:
    from engine.run_store import StoreEmbed

MAX_PATHS = 20  # JSON paths an item's put may name
MAX_TEXTS = 256  # texts an item's paths may give ("tags[*]" gives one per tag): each is embedded on its put


@dataclass(frozen=True)
class StoreIndex:
    dims: int
    embed: str  # "provider:model"
    fields: tuple[str, ...]

    @property
    def provider(self) -> str:
        return self.embed.partition(":")[0]

    @property
    def model(self) -> str:
        return self.embed.partition(":")[2]


def store_index() -> StoreIndex | None:
    """The configured index (core.env.env_store_index checked its shape), None when the store has none."""
    config = settings.CHATTER_STORE_INDEX
    if not config:
        return None
    return StoreIndex(dims=config["dims"], embed=config["embed"], fields=tuple(config.get("fields") or ["$"]))


def store_index_check() -> None:
    """Raise ImproperlyConfigured (at start-up) unless the index's model is one Chatter embeds with, at its dims."""
    index = store_index()
    if index is None:
        return
    where = f"CHATTER_STORE_INDEX ({index.embed})"
    if (refusal := embeddings_refusal(index.provider, index.model)) is not None:
        raise ImproperlyConfigured(f"{where}: {refusal}")
    if index.provider == "local":
        if index.model == MINILM_MODEL and index.dims != MINILM_DIMENSIONS:
            raise ImproperlyConfigured(f"{where}: {MINILM_MODEL} has {MINILM_DIMENSIONS} dims, not {index.dims}")
        return
    try:
        provider_check(index.provider, model=index.model)
    except InvalidInput as exc:
        raise ImproperlyConfigured(f"{where}: {exc.message}") from None


def index_paths(index: StoreIndex, requested) -> list[str]:
    """The JSON paths an item's put embeds: the index's fields (`requested` None), none (False), or its own."""
    if requested is None:
        return list(index.fields)
    if requested is False:
        return []
    if len(requested) > MAX_PATHS or not all(isinstance(path, str) and path.strip() for path in requested):
        raise InvalidInput(f"index: at most {MAX_PATHS} JSON paths, each a non-empty text",
                           details=[{"path": "index", "code": "invalid", "message": "a list of JSON paths, or false"}])
    return list(requested)


def item_texts(value: dict, paths: list[str]) -> list[tuple[str, str]]:
    """(field, text) for each text of `value` at `paths`; a path with several texts names each "<path>.<i>"."""
    from langgraph.store.base import get_text_at_path  # here: the commands start without LangGraph (test_cli_startup)

    found = []
    for path in paths:
        texts = get_text_at_path(value, path)
        found += [(f"{path}.{i}" if len(texts) > 1 else path, text) for i, text in enumerate(texts)]
    if len(found) > MAX_TEXTS:
        raise InvalidInput(f"the item's index paths give {len(found)} texts to embed; at most {MAX_TEXTS}",
                           details=[{"path": "index", "code": "too_many_texts", "message": f"at most {MAX_TEXTS}"}])
    return found


def texts_embed(index: StoreIndex, texts: list[str], *, owner, purpose: dict, api_key=None,
                embed: StoreEmbed | None = None) -> list[list[float]]:
    """The index model's vectors of `texts`, in order, each of the index's dims: every request an LLM call of kind
    `embedding` charged to `owner` and held to their budgets (and `api_key`'s limits), as every embedding is. In a
    graph's run, `embed` makes them calls of the run's (engine.run_store); else they are a run of their own
    (gateway.embeddings) that records `purpose`. A provider's failure, or vectors of another size, is UpstreamFailed
    (nothing is written); a budget or limit with no room is its own refusal (429)."""
    from gateway.embeddings import EmbeddingsFailed, embeddings_create  # a run's path: commands start without it

    model = f"{index.provider}/{index.model}"
    # The lexical local model makes vectors of any size: the index's.
    dimensions = index.dims if index.provider == "local" and index.model != MINILM_MODEL else None
    if embed is not None:
        batch = settings.CHATTER_EMBEDDING_BATCH_SIZE
        vectors = [vector for start in range(0, len(texts), batch)
                   for vector in embed(model, texts[start:start + batch], dimensions)]
    else:
        try:
            vectors = embeddings_create(owner=owner, model=model, texts=texts, purpose=purpose, api_key=api_key,
                                        dimensions=dimensions).vectors
        except EmbeddingsFailed as failed:
            if failed.status != 502:
                raise
            raise UpstreamFailed(failed.message, details=failed.details) from None
    wrong = next((len(vector) for vector in vectors if len(vector) != index.dims), None)
    if wrong is not None:
        raise UpstreamFailed(f"{index.embed} answered vectors of {wrong} dimensions; the store's index has "
                             f"{index.dims} (dims)")
    return vectors
