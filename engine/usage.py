"""The one place that turns what a provider reported into tokens and cost.

Every LLM call ends here: `usage_from_message` normalizes the raw provider object (or LangChain's `usage_metadata`)
into inclusive prompt/completion counts with cached/reasoning sub-buckets, estimates when nothing readable was
reported, and `cost_for_usage` prices it in Decimal.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Iterable, Protocol

from langchain_core.messages import BaseMessage

from engine.chat_messages import content_text
from engine.money import usd

MILLION = Decimal(1_000_000)
CENT_PLACES = Decimal("0.00000001")  # money has 8 decimal places everywhere


class Price(Protocol):
    input_per_million: Decimal
    output_per_million: Decimal

    @property
    def cached_price(self) -> Decimal: ...


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal("0")
    estimated: bool = False
    provider_cost: bool = False
    unpriced: bool = False  # no price was in force for the model: the cost is 0 because it is unknown
    raw: Any = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Usage") -> "Usage":
        raws = [r for r in (self.raw, other.raw) if r]
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cost=self.cost + other.cost,
            estimated=self.estimated or other.estimated,
            provider_cost=self.provider_cost or other.provider_cost,
            unpriced=self.unpriced or other.unpriced,
            raw=_flatten_raw(raws),
        )

    def token_fields(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }

    def as_event_data(self) -> dict:
        return {
            **self.token_fields(),
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost": usd(self.cost),
            "estimated": self.estimated,
        }


def _flatten_raw(raws: list) -> Any:
    calls: list = []
    for raw in raws:
        calls.extend(raw["calls"] if isinstance(raw, dict) and "calls" in raw else [raw])
    if not calls:
        return {}
    return calls[0] if len(calls) == 1 else {"calls": calls}


def estimate_tokens(text: str) -> int:
    """Offline estimate: about four characters per token, at least one token for any text."""
    return math.ceil(len(text) / 4) if text else 0


def estimate_input_tokens(inputs: list) -> int:
    """Offline estimate of what an embeddings call reads: each of its inputs (a text, or anything else as its text)."""
    return sum(estimate_tokens(item if isinstance(item, str) else str(item)) for item in inputs)


def estimate_rerank_tokens(query: str, documents: list[str]) -> int:
    """Offline estimate of what a rerank call reads: each document, and the query once per document."""
    return estimate_tokens(query) * len(documents) + sum(estimate_tokens(text) for text in documents)


def _message_text(message: BaseMessage) -> str:
    content = message.content
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    for call in getattr(message, "tool_calls", None) or []:
        text += call.get("name", "") + json.dumps(call.get("args", {}), sort_keys=True)
    return text


def estimate_prompt_tokens(messages: Iterable[BaseMessage]) -> int:
    # Every message carries a few tokens of framing (role, separators) in chat formats.
    return sum(estimate_tokens(_message_text(m)) + 4 for m in messages)


def estimate_completion_tokens(message: BaseMessage) -> int:
    return estimate_tokens(_message_text(message))


def streamed_so_far(message: BaseMessage | None) -> dict:
    """What a reply still streaming (or cut short) has produced: its text (read as chat_messages.content_text reads
    it), and its tool-call fragments (names and raw argument text, possibly half a JSON object) as one string."""
    if message is None:
        return {"text": "", "tool_call_text": ""}
    fragments = getattr(message, "tool_call_chunks", None) or []
    return {"text": content_text(message.content),
            "tool_call_text": "".join((c.get("name") or "") + (c.get("args") or "") for c in fragments)}


def usage_cut_short(*, prompt_tokens: int, streamed: dict) -> Usage:
    """A call that ended before its provider reported usage (a broken stream, a dead process): the prompt it sent
    (already estimated) and what it streamed (`streamed_so_far`), estimated and flagged."""
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=estimate_tokens((streamed.get("text") or "") + (streamed.get("tool_call_text") or "")),
        estimated=True,
    )


# More tokens than any call reports (a trillion): a count past it is a server's error, never a bill; with it a
# conversation's or a day's sums stay far inside their 64-bit columns.
MAX_REPORTED_TOKENS = 10**12
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_DETAIL_COUNTS = (("prompt_tokens_details", "cached_tokens"), ("completion_tokens_details", "reasoning_tokens"))


def _count(value: Any) -> bool:
    """Whether `value` is a token count as a server reports one: a whole number from 0 to MAX_REPORTED_TOKENS."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value == int(value) and 0 <= value <= MAX_REPORTED_TOKENS


def _int(value: Any) -> int:
    return int(value) if _count(value) else 0


def openai_usage_readable(raw: Any) -> bool:
    """Whether an OpenAI-shaped usage object can be taken as the call's count: an object with its prompt and
    completion counts, whose counts are token counts (`_count`; a null is none). Anything else (`{}`, a null
    completion count, a list, a text, a negative, an infinite or a 1e20 count) is a server's error: the call's usage
    is then estimated and flagged, as when it reports none."""
    if not isinstance(raw, dict):
        return False
    details = [raw.get(part) for part, _ in _DETAIL_COUNTS]
    if any(detail is not None and not isinstance(detail, dict) for detail in details):
        return False
    counts = [raw.get(name) for name in _COUNTS] + [
        (detail or {}).get(name) for detail, (_, name) in zip(details, _DETAIL_COUNTS)]
    return all(raw.get(name) is not None for name in ("prompt_tokens", "completion_tokens")) and all(
        count is None or _count(count) for count in counts)


def _estimated(message: BaseMessage, prompt: Iterable[BaseMessage]) -> Usage:
    return Usage(prompt_tokens=estimate_prompt_tokens(prompt), completion_tokens=estimate_completion_tokens(message),
                 estimated=True)


def usage_from_message(message: BaseMessage, *, prompt: Iterable[BaseMessage] = (), raw: Any = None) -> Usage:
    """Normalize one call's usage. `prompt` is what was sent, used only to estimate missing usage. `raw` is
    the provider's usage object when the caller has it (a streamed openai reply: LangChain keeps no copy);
    else it is the `token_usage` LangChain keeps in a blocking reply's metadata. Such an OpenAI-shaped object is
    read by the gateway's rule (`openai_usage_readable`, `usage_from_openai`): LangChain reads an empty or partial
    one as zeros. Without one (another provider, a Python graph's own ChatOpenAI streaming), LangChain's
    `usage_metadata` is read; none of its tokens counted (0 in, 0 out) is no count: a streamed ChatOpenAI reads an
    upstream's empty usage chunk, `{}`, so, and a call always reads its prompt. No count: estimated."""
    raw = _reported(raw if raw is not None else message.response_metadata.get("token_usage"))
    if raw is not None:
        return usage_from_openai(raw) if openai_usage_readable(raw) else _estimated(message, prompt)
    metadata = getattr(message, "usage_metadata", None)
    if not metadata or not (_count(metadata.get("input_tokens")) and _count(metadata.get("output_tokens"))) or not (
            metadata.get("input_tokens") or metadata.get("output_tokens")):
        return _estimated(message, prompt)
    prompt_tokens = _int(metadata.get("input_tokens"))
    completion_tokens = _int(metadata.get("output_tokens"))
    input_details = metadata.get("input_token_details") or {}
    output_details = metadata.get("output_token_details") or {}
    # Sub-buckets are parts of the inclusive counts, never added on top of them.
    cached = min(_int(input_details.get("cache_read")), prompt_tokens)
    reasoning = min(_int(output_details.get("reasoning")), completion_tokens)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_prompt_tokens=cached,
        reasoning_tokens=reasoning,
        raw=dict(metadata),
    )


def usage_from_openai(raw: dict) -> Usage:
    """A chat completion's usage as an OpenAI-shaped server reports it (a call relayed as is, not through a client
    library): its tokens, the cached and reasoning ones within them, a provider's own cost."""
    raw = _reported(raw)
    prompt_tokens, completion_tokens = _int(raw.get("prompt_tokens")), _int(raw.get("completion_tokens"))
    provider_cost = _provider_cost(raw)
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        cached_prompt_tokens=min(_int((raw.get("prompt_tokens_details") or {}).get("cached_tokens")), prompt_tokens),
        reasoning_tokens=min(_int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens")),
                             completion_tokens),
        cost=provider_cost if provider_cost is not None else Decimal("0"),
        provider_cost=provider_cost is not None, raw=raw)


def estimate_openai_prompt_tokens(messages: list) -> int:
    """estimate_prompt_tokens of OpenAI-shaped messages (dicts), as sent."""
    return sum(estimate_tokens(message.get("content") if isinstance(message.get("content"), str) else json.dumps(
        {k: v for k, v in message.items() if k != "role"}, default=str)) + 4
        for message in messages if isinstance(message, dict))


def usage_from_embeddings(raw: Any, *, estimate: int) -> Usage:
    """An embeddings call's usage: the tokens it read (`prompt_tokens`, else `total_tokens`), none completed;
    `estimate` (the inputs, estimated) flagged when the server reported no count, or none that is a token count (a
    negative, a text, a fraction, past MAX_REPORTED_TOKENS: `_count`), as a chat call's is. A provider's cost wins."""
    raw = _reported(raw) if isinstance(raw, dict) else {}
    provider_cost = _provider_cost(raw)
    read = next((raw[name] for name in ("prompt_tokens", "total_tokens") if _count(raw.get(name))), None)
    return Usage(prompt_tokens=estimate if read is None else int(read), estimated=read is None,
                 cost=provider_cost if provider_cost is not None else Decimal("0"),
                 provider_cost=provider_cost is not None, raw=raw)


def usage_from_rerank(raw: Any, *, estimate: int) -> Usage:
    """A rerank call's usage: the tokens it read, as the server counted them (llama.cpp's `prompt_tokens`, Jina's
    and Cohere-compatible servers' `total_tokens`); `estimate` (the query and documents, estimated) flagged when it
    reported none. A provider's cost wins."""
    raw = _reported(raw) if isinstance(raw, dict) else {}
    provider_cost = _provider_cost(raw)
    read = _int(raw.get("prompt_tokens")) or _int(raw.get("total_tokens"))
    return Usage(prompt_tokens=read or estimate, estimated=not read,
                 cost=provider_cost if provider_cost is not None else Decimal("0"),
                 provider_cost=provider_cost is not None, raw=raw)


def _reported(raw: Any) -> Any:
    """The usage object as the provider sent it: client libraries pad absent fields with None."""
    if isinstance(raw, dict):
        return {key: _reported(value) for key, value in raw.items() if value is not None}
    return raw


def _provider_cost(raw: Any) -> Decimal | None:
    if not isinstance(raw, dict) or raw.get("cost") is None or isinstance(raw.get("cost"), bool):
        return None
    try:
        cost = Decimal(str(raw["cost"]))
    except InvalidOperation:
        return None
    return cost.quantize(CENT_PLACES, rounding=ROUND_HALF_UP) if cost.is_finite() and cost >= 0 else None


def cost_for_usage(usage: Usage, price: Price | None) -> Decimal:
    """(prompt − cached) × input + cached × cached price + completion × output, per million tokens."""
    if price is None:
        return Decimal("0")
    uncached = usage.prompt_tokens - usage.cached_prompt_tokens
    cost = (
        uncached * price.input_per_million
        + usage.cached_prompt_tokens * price.cached_price
        + usage.completion_tokens * price.output_per_million
    ) / MILLION
    return cost.quantize(CENT_PLACES, rounding=ROUND_HALF_UP)


def priced(usage: Usage, price: Price | None) -> Usage:
    """The usage with its cost filled in; a provider-reported cost wins over our price table. Without either, the
    cost is unknown: 0, flagged `unpriced`."""
    if usage.provider_cost:
        return usage
    return replace(usage, cost=cost_for_usage(usage, price), unpriced=price is None)
