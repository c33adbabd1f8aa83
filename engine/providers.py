"""Chat models per provider, as LangChain chat models the engine streams alike
(docs/operations/configuration.md#providers).

The engine (runtime.py) reads usage from the stream through LangChain's public `usage_metadata`; LangChain keeps
no copy of a streamed OpenAI usage object, so the openai adapter copies the raw objects off the HTTP response
(`RawUsageReports`, `usage_copied_into`, through the SDK's `http_client`: openai_http). The client libraries are
imported where a model is made, not here: they take about a second to import, and every command and the admin
load this module without necessarily calling a model.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from engine.chat_messages import json_object
from engine.embeddings_minilm import MINILM_DIMENSIONS, MINILM_MODEL, minilm_embed
from engine.embedding_models import embeddings_refusal
from engine.errors import InvalidInput, ProviderError
from engine.provider_failures import error_object
from engine.routing import route_for
from engine.settings import settings
from engine.usage import openai_usage_readable

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import UsageMetadata

    from engine.routing import Deployment

logger = logging.getLogger(__name__)

PROVIDERS = ("local", "openai", "anthropic")
# Providers whose streamed usage reports are parts of the call's usage, to be added up; every other provider's
# report is whole, and the last one received is the call's usage.
USAGE_REPORTED_IN_PARTS = frozenset({"anthropic"})

# A server-sent event line carrying a usage (OpenAI sends `"usage": null` on the other chunks).
_USAGE_LINE = re.compile(rb'^data:.*"usage"\s*:\s*[^\sn]')
_FINGERPRINT = b'"system_fingerprint"'
_ERROR_FIELD = b'"error"'


class RawUsageReports:
    """The usage objects an OpenAI-compatible server streamed during one call, exactly as sent; for a reply sent
    whole (not streamed), its usage object and its choices' tool calls as sent (LangChain keeps only the arguments
    it could parse, re-encoded). Also the stream's `system_fingerprint` as soon as a chunk carries it (LangChain
    passes it on with the stream's last chunk only). A usage that is no count (usage.openai_usage_readable: `{}`, a
    null or a text for a count), which LangChain reads as zeros or fails the call on, is not kept: `read_body` and
    `read_line` return what the client library reads, that reply or line with `"usage": null` (usage estimated). And
    the error object a server answered 200 with (`error`), whole or as a stream's event, which the client libraries
    raise as anything but what it was (LangChain a ValueError of it, OpenAI's SDK an APIError with no status)."""

    def __init__(self) -> None:
        self.reports: list[dict] = []
        self.error: dict | None = None
        self.system_fingerprint: str | None = None
        self._fingerprint_read = False  # the first chunk that names one (if any) was read
        self.tool_calls: list[list[dict] | None] = []  # per choice of a whole reply, by its index

    def read_body(self, body: bytes, *, status: int = 200) -> bytes:
        document = json_object(body)
        if document is None:
            return body  # the SDK reports it
        if status < 400:  # (an error status's error object is the SDK's to report)
            self._error_read(document)
        choices = [c for c in document.get("choices") or () if isinstance(c, dict)]
        choices.sort(key=lambda choice: choice.get("index") if isinstance(choice.get("index"), int) else 0)
        self.tool_calls = [(choice.get("message") or {}).get("tool_calls") or None for choice in choices]
        return body if self._usage_kept(document) else json.dumps({**document, "usage": None}).encode()

    def report_for(self, usage: UsageMetadata | None) -> dict | None:
        """The object `usage` was read from: the last one with its counts (a server may send several, and
        the response may have been read a little past the last chunk the engine took)."""
        if not usage:
            return None
        counts = (usage.get("input_tokens"), usage.get("output_tokens"))
        return next((r for r in reversed(self.reports) if (r["prompt_tokens"], r["completion_tokens"]) == counts), None)

    def read_line(self, line: bytes) -> bytes:
        fingerprinted = not self._fingerprint_read and _FINGERPRINT in line and line.startswith(b"data:")
        usage_line = _USAGE_LINE.match(line)
        erring = _ERROR_FIELD in line and line.startswith(b"data:")
        event = json_object(line[len(b"data:"):]) if fingerprinted or usage_line or erring else None
        if event is not None and erring:
            self._error_read(event)
        if event is not None and fingerprinted:
            self._fingerprint_read, fingerprint = True, event.get("system_fingerprint")
            self.system_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        if event is None or not usage_line or self._usage_kept(event):
            return line  # (a malformed chunk: the SDK reports it)
        return b"data: " + json.dumps({**event, "usage": None}).encode()

    def _error_read(self, document: dict) -> None:
        if "error" in document and not document.get("choices"):
            self.error = error_object(document) or {}

    def _usage_kept(self, document: dict) -> bool:
        """Whether a chunk's or reply's usage goes on as sent: none, or a count (kept)."""
        usage = document.get("usage")
        kept = openai_usage_readable(usage)
        if kept:
            self.reports.append(usage)
        return kept or usage is None


# Where the calling thread's current call collects its usage objects (`usage_copied_into`).
_usage_reports: ContextVar[RawUsageReports | None] = ContextVar("usage_reports", default=None)


@contextmanager
def usage_copied_into(reports: RawUsageReports) -> Iterator[RawUsageReports]:
    """The usage objects the openai calls made in this block stream, copied into `reports` as sent."""
    token = _usage_reports.set(reports)
    try:
        yield reports
    finally:
        _usage_reports.reset(token)


def usage_reports_current() -> RawUsageReports | None:
    """The reports of the call this context is making (`usage_copied_into`), if any."""
    return _usage_reports.get()


@functools.lru_cache(maxsize=64)
def _openai_chat_model(**params) -> BaseChatModel:
    """One model object per set of parameters and process: building one builds the SDK's clients (its async one
    too), which the calls of a gateway would otherwise pay for every time."""
    from langchain_openai import ChatOpenAI

    from engine.openai_http import usage_copying_http_client

    return ChatOpenAI(**params, stream_usage=True, http_client=usage_copying_http_client())


@functools.lru_cache(maxsize=64)
def _local_chat_model(**params) -> BaseChatModel:
    """One model object per set of parameters and process, as for openai: LangChain describes a model object
    (for its callbacks) once, the first time it is called."""
    from engine.local_model import LocalChatModel

    return LocalChatModel(**params)


def _forget_clients() -> None:
    # A forked process (django-q2's workers) opens connections of its own: a pooled socket is never shared.
    _openai_chat_model.cache_clear()  # (openai_http forgets its clients itself)


os.register_at_fork(after_in_child=_forget_clients)


def _installed(package: str) -> bool:
    """Whether `package` can be imported, not importing it (the Anthropic SDK takes seconds): Python's own answer when
    sys.modules has one, else one search of sys.path a process (each gateway call made one: 3% of its CPU, B8)."""
    return sys.modules[package] is not None if package in sys.modules else _found_on_path(package)


@functools.cache
def _found_on_path(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def provider_check(provider: str, *, model: str | None = None) -> None:
    """Raise InvalidInput when the provider cannot be used on this installation (for `model`: a model the
    deployments file routes needs none of the provider's own settings)."""
    if provider not in PROVIDERS:
        raise InvalidInput(
            f"unknown provider {provider!r}", details={"provider": [f"must be one of {', '.join(PROVIDERS)}"]}
        )
    if provider == "anthropic" and not _installed("langchain_anthropic"):
        raise InvalidInput(
            "provider 'anthropic' needs the optional package langchain-anthropic (pip install langchain-anthropic)",
            details={"provider": ["langchain-anthropic is not installed"]},
        )
    if provider == "openai" and not (settings.openai_api_key or settings.openai_base_url) and not (
            model and route_for(provider, model)):
        raise InvalidInput(
            "provider 'openai' needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local compatible server)",
            details={"provider": ["OPENAI_API_KEY is not set"]},
        )


def providers_configured() -> list[str]:
    """The providers this installation can call: known, installed, and given the key (or, for openai, the
    base URL of a compatible server) they need."""
    usable = []
    for provider in PROVIDERS:
        try:
            provider_check(provider)
        except InvalidInput:
            continue
        if provider == "anthropic" and not settings.anthropic_api_key:
            continue
        usable.append(provider)
    return usable


SERVED_MODELS_TTL_S = 60.0
_served: dict[str, tuple[float, frozenset[str] | None]] = {}  # a server's base URL → (when read, its models)


def provider_models_served(provider: str) -> frozenset[str] | None:
    """The models `provider`'s server serves: the local model's, or what an OpenAI-compatible server lists at its
    /models (read once a minute per process); None when that cannot be told (no listing, or it failed)."""
    if provider == "local":
        from engine.embeddings_local import LOCAL_EMBEDDING_MODELS
        from engine.embeddings_minilm import MINILM_MODEL
        from engine.local_model import LOCAL_MODELS

        return frozenset((*LOCAL_MODELS, *LOCAL_EMBEDDING_MODELS, MINILM_MODEL))
    if provider != "openai":
        return None
    now = time.monotonic()
    base = (settings.openai_base_url or "https://api.openai.com/v1").rstrip("/")
    read_at, models = _served.get(base, (None, None))
    if read_at is not None and now - read_at < SERVED_MODELS_TTL_S:
        return models
    from engine.openai_http import shared_http_client

    try:
        response = shared_http_client().get(
            f"{base}/models", timeout=5, headers={"Authorization": f"Bearer {settings.openai_api_key or 'unused'}"})
        response.raise_for_status()
        models = frozenset(entry["id"] for entry in response.json()["data"])
    except Exception:  # noqa: BLE001 - a server without a listing (or down): which models it serves is unknown
        logger.info("%s: its server's model list could not be read", provider, exc_info=True)
        models = None
    _served[base] = (now, models)
    return models




@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]]
    model: str  # as the server reported it
    usage: dict  # the provider's usage object (prompt_tokens, total_tokens), as sent ({} when it sent none)


def embeddings_create(*, provider: str, model: str, inputs: list, dimensions: int | None,
                      timeout_s: float, deployment: Deployment | None = None) -> Embedded:
    """Embed `inputs` (texts, or token arrays an OpenAI-compatible server takes) with the provider's embeddings API;
    the local models (local-embed-1, all-MiniLM-L6-v2) work offline. `deployment`: as for chat_model."""
    if deployment is None:
        provider_check(provider)
    else:
        provider, model = deployment.provider, deployment.model
    if (refusal := embeddings_refusal(provider, model)) is not None:
        raise InvalidInput(refusal, details=[{"path": "model", "code": "no_embeddings", "message": refusal}])
    if provider == "local" and model == MINILM_MODEL:
        if dimensions not in (None, MINILM_DIMENSIONS) or not all(isinstance(item, str) for item in inputs):
            raise InvalidInput(f"{MINILM_MODEL} embeds texts in {MINILM_DIMENSIONS} dimensions", details=[
                {"path": "input", "code": "unsupported", "message": f"texts only, {MINILM_DIMENSIONS} dimensions"}])
        vectors, prompt_tokens = minilm_embed(inputs)
        return Embedded(vectors, model, {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens})
    if provider == "local":
        from engine.embeddings_local import local_embeddings

        vectors, prompt_tokens = local_embeddings(inputs, dimensions=dimensions)
        return Embedded(vectors, model, {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens})
    client = openai_client(deployment, timeout_s)
    response = client.embeddings.create(model=model, input=inputs, encoding_format="float",
                                        **({"dimensions": dimensions} if dimensions else {}))
    vectors = _vectors_answered(provider, response.data, len(inputs))
    usage = response.usage.model_dump(exclude_none=True) if response.usage is not None else {}  # a server may send none
    return Embedded(vectors, response.model or model, usage)


def _vectors_answered(provider: str, data, count: int) -> list[list[float]]:
    """The vectors of an embeddings answer's `data`, in the inputs' order: one for each of the `count` inputs (its
    `index`), each a list of finite numbers. An answer of another shape (a vector missing or twice, NaN or Infinity,
    which no JSON column nor vector holds) is a ProviderError, as a rerank answer's is."""
    by_index = {getattr(item, "index", None): getattr(item, "embedding", None) for item in data or []}
    vectors = [by_index.get(index) for index in range(count)]
    if len(data or []) != count or not all(
            isinstance(vector, list) and vector and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector)
            for vector in vectors):
        raise ProviderError(f"{provider}'s embeddings answer is not one vector of finite numbers for each of the "
                            f"{count} inputs", error_type="provider_error")
    return vectors


def openai_client(deployment: Deployment | None, timeout_s: float):
    """An OpenAI client of the provider's own server, or of `deployment`'s (whose routing retries, not the client)."""
    import openai

    from engine.openai_http import usage_copying_http_client

    return openai.OpenAI(base_url=settings.openai_base_url if deployment is None else deployment.base_url,
                         api_key=(settings.openai_api_key if deployment is None else deployment.api_key) or "unused",
                         timeout=timeout_s,
                         max_retries=settings.provider_max_retries if deployment is None else 0,
                         http_client=usage_copying_http_client())


def chat_model(
    *,
    provider: str,
    model: str,
    temperature: float | None,
    max_tokens: int | None,
    timeout_s: float,
    deployment: Deployment | None = None,
) -> BaseChatModel:
    """The provider's chat model (a local or openai one is made once per set of parameters and process, and
    shared).
    Within `usage_copied_into(reports)`, an openai call copies the usage objects its server streams into `reports`,
    as sent (other providers' raw usage is what LangChain reports). `deployment`: a deployment of the deployments
    file (engine.routing) instead of the provider's own server; the routing retries on another
    deployment, so the client does not retry."""
    if deployment is None:
        provider_check(provider)
    else:  # checked as the deployments file was read
        provider, model = deployment.provider, deployment.model
    if provider == "local":
        return _local_chat_model(
            model_name=model,
            temperature=temperature,
            max_tokens=max_tokens,
            token_delay_s=settings.local_token_delay_ms / 1000,
        )
    if provider == "openai":
        return _openai_chat_model(
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            base_url=settings.openai_base_url if deployment is None else deployment.base_url,
            # Local OpenAI-compatible servers accept any key; the client insists on one.
            api_key=(settings.openai_api_key if deployment is None else deployment.api_key) or "unused",
            timeout=timeout_s,
            max_retries=settings.provider_max_retries if deployment is None else 0,
        )
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(
        model=model,
        temperature=temperature,
        max_tokens=max_tokens or 1024,
        api_key=settings.anthropic_api_key if deployment is None else deployment.api_key,
        **({} if deployment is None else {"base_url": deployment.base_url}),
        stream_usage=True,
        timeout=timeout_s,
        max_retries=0,  # the engine retries it, within the run's deadline (engine.retries)
    )
