"""Chat models per provider. Each adapter hands the engine a LangChain chat model whose stream ends
with exactly one usage report, so the engine's one usage path (usage.py) sees every provider alike."""
from __future__ import annotations

from typing import Any, Iterator

from django.conf import settings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI

from chatter_project.errors import InvalidInput, ProviderError
from workflows.engine.local_model import LocalChatModel

PROVIDERS = ("local", "openai", "anthropic")


class UsageReportingChatOpenAI(ChatOpenAI):
    """ChatOpenAI that keeps the raw usage object and reports usage once per stream.

    OpenAI-style servers send one usage object per request, normally in the last chunk; some repeat it
    cumulatively. Chunks are summed when added, so a repeated report would be counted twice: keep the
    last one and emit it on a final empty chunk instead. A stream that breaks after a report still hands
    that report over (on the final chunk, then the error): the provider bills what it reported.
    """

    def _convert_chunk_to_generation_chunk(self, chunk: dict, default_chunk_class: type, base_generation_info):
        generation = super()._convert_chunk_to_generation_chunk(chunk, default_chunk_class, base_generation_info)
        if generation is not None and chunk.get("usage"):
            generation.message.response_metadata["usage_raw"] = chunk["usage"]
        return generation

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        usage, raw, model_name = None, None, None
        try:
            for generation in super()._stream(*args, **kwargs):
                message = generation.message
                if message.usage_metadata:
                    usage, message.usage_metadata = message.usage_metadata, None
                    raw = message.response_metadata.pop("usage_raw", raw)
                # The model name rides on the final chunk only: strings are concatenated when chunks are added.
                model_name = (generation.generation_info or {}).pop("model_name", None) or model_name
                model_name = message.response_metadata.pop("model_name", None) or model_name
                yield generation
        except Exception:
            if usage is not None:
                yield self._final_chunk(usage, raw, model_name)
            raise
        yield self._final_chunk(usage, raw, model_name)

    def _final_chunk(self, usage, raw, model_name) -> ChatGenerationChunk:
        metadata = {"model_name": model_name or self.model_name}
        if raw is not None:
            metadata["usage_raw"] = raw
        return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata))


def _is_timeout(exc: BaseException) -> bool:
    # openai/anthropic wrap httpx timeouts in APITimeoutError; a timeout mid-stream can surface bare.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, TimeoutError) or bool(names & {"APITimeoutError", "TimeoutException"})


def provider_failure(exc: Exception, *, provider: str) -> ProviderError:
    """What a failed provider call means for the run: rate limited, timed out, or any other provider error."""
    if getattr(exc, "status_code", None) == 429:
        error_type = "provider_rate_limited"
    elif _is_timeout(exc):
        error_type = "provider_timeout"
    else:
        error_type = "provider_error"
    return ProviderError(f"{provider} call failed: {type(exc).__name__}: {exc}", error_type=error_type)


def provider_check(provider: str) -> None:
    """Raise InvalidInput when the provider cannot be used on this installation."""
    if provider not in PROVIDERS:
        raise InvalidInput(
            f"unknown provider {provider!r}", details={"provider": [f"must be one of {', '.join(PROVIDERS)}"]}
        )
    if provider == "anthropic":
        try:
            import langchain_anthropic  # noqa: F401
        except ImportError:
            raise InvalidInput(
                "provider 'anthropic' needs the optional package langchain-anthropic (pip install langchain-anthropic)",
                details={"provider": ["langchain-anthropic is not installed"]},
            ) from None
    if provider == "openai" and not (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL):
        raise InvalidInput(
            "provider 'openai' needs OPENAI_API_KEY (or OPENAI_BASE_URL for a local compatible server)",
            details={"provider": ["OPENAI_API_KEY is not set"]},
        )


def chat_model(
    *, provider: str, model: str, temperature: float | None, max_tokens: int | None, timeout_s: float
) -> BaseChatModel:
    provider_check(provider)
    if provider == "local":
        return LocalChatModel(
            model_name=model,
            temperature=temperature,
            max_tokens=max_tokens,
            token_delay_s=settings.CHATTER_LOCAL_TOKEN_DELAY_MS / 1000,
        )
    if provider == "openai":
        return UsageReportingChatOpenAI(
            model=model,
            temperature=temperature,
            max_tokens=max_tokens,
            base_url=settings.OPENAI_BASE_URL,
            # Local OpenAI-compatible servers accept any key; the client insists on one.
            api_key=settings.OPENAI_API_KEY or "unused",
            stream_usage=True,
            timeout=timeout_s,
            max_retries=settings.CHATTER_PROVIDER_MAX_RETRIES,
        )
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(
        model=model,
        temperature=temperature,
        max_tokens=max_tokens or 1024,
        api_key=settings.ANTHROPIC_API_KEY,
        stream_usage=True,
        timeout=timeout_s,
        max_retries=settings.CHATTER_PROVIDER_MAX_RETRIES,
    )
