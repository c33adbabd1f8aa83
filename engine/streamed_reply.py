"""One streamed reply as its chunks arrive (engine.runtime's streaming call): the message they add up to, its usage
and the model's name kept apart from it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, UsageMetadata
from langchain_core.messages.ai import add_usage
from langchain_core.messages.utils import message_chunk_to_message

from engine.chat_messages import tool_calls_streamed
from engine.providers import RawUsageReports
from engine.usage import streamed_so_far

# A reply's metadata that every chunk repeats: kept once, not concatenated as chunks are added.
_ONCE = frozenset({"model_name", "system_fingerprint"})


@dataclass
class StreamedReply:
    """One streamed reply as its chunks arrive. Usage and the model's name are kept out of the message
    built from the chunks: adding chunks sums their usage and concatenates their strings, which is wrong
    for a usage report repeated on several chunks and for a name sent more than once. The chunks are added up
    when the message is asked for (once, at the end), not as each arrives: LangChain's `+` builds a new message
    each time. `message_id`: the id the message has so far (LangChain's rule, applied only when a chunk's id
    differs from the last one's)."""

    usage_in_parts: bool
    raw_usage: RawUsageReports
    chunks: list[AIMessageChunk] = field(default_factory=list)
    message_id: str | None = None
    usage: UsageMetadata | None = None
    model_name: str = ""
    system_fingerprint: str = ""  # sent on every chunk: kept once, like the model's name
    finished: bool = False  # the provider said why the reply ended (a finish or stop reason): it was not cut short

    def add(self, chunk: AIMessageChunk) -> None:
        update: dict[str, Any] = {}
        if chunk.usage_metadata:
            adds_up = self.usage_in_parts and self.usage is not None
            self.usage = add_usage(self.usage, chunk.usage_metadata) if adds_up else chunk.usage_metadata
            update["usage_metadata"] = None
        if chunk.response_metadata.get("finish_reason") or chunk.response_metadata.get("stop_reason"):
            self.finished = True
        if _ONCE.intersection(chunk.response_metadata):
            metadata = chunk.response_metadata
            self.model_name = metadata.get("model_name") or self.model_name
            self.system_fingerprint = metadata.get("system_fingerprint") or self.system_fingerprint
            update["response_metadata"] = {k: v for k, v in metadata.items() if k not in _ONCE}
        if update:
            chunk = chunk.model_copy(update=update)
        if not self.chunks:
            self.message_id = chunk.id
        elif chunk.id != self.chunks[-1].id:
            self.message_id = (AIMessageChunk(content="", id=self.message_id)
                               + AIMessageChunk(content="", id=chunk.id)).id
        self.chunks.append(chunk)

    @property
    def message(self) -> AIMessageChunk | None:
        """The chunks so far added up, or None before any (read from another thread too: a copy is added)."""
        chunks = list(self.chunks)
        if len(chunks) < 2:
            return chunks[0] if chunks else None
        return chunks[0] + chunks[1:]

    def so_far(self) -> dict:
        """What has streamed so far (see usage.streamed_so_far); safe to call from another thread."""
        return streamed_so_far(self.message)

    def reply(self) -> AIMessage:
        message = self.message
        reply = message_chunk_to_message(message) if message is not None else AIMessage("")
        metadata = {**reply.response_metadata, **({"model_name": self.model_name} if self.model_name else {}),
                    **({"system_fingerprint": self.system_fingerprint} if self.system_fingerprint else {})}
        update: dict[str, Any] = {"usage_metadata": self.usage, "response_metadata": metadata}
        if message is not None and message.tool_call_chunks:
            # The message keeps only the parsed arguments; the strings as streamed are what the model sent
            # (chat_messages.tool_calls_as_sent), kept where LangChain keeps a provider's own encoding of them.
            update["additional_kwargs"] = {**reply.additional_kwargs,
                                           "tool_calls": tool_calls_streamed(message)}
        return reply.model_copy(update=update)
