"""The seam between the engine and what records a run: `RunHooks`, what a running graph tells (and asks of) its
recorder, and the records it passes through them (a model call, a routed attempt, a call about to wait, a fetched
prompt, an MCP tool's outcome, a search of knowledge collections). The workflows services implement the hooks with
rows and events; a bare run (benchmarks) uses `NullHooks`, which records nothing."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Protocol, Sequence

from langchain_core.messages import BaseMessage, ToolMessage

from engine.errors import RunError
from engine.graph import Node
from engine.usage import Price, Usage


@dataclass(frozen=True)
class LLMCall:
    provider: str
    model: str  # as the server reported it
    requested_model: str  # as the run asked for it: what the call is priced by
    usage: Usage
    duration_ms: int
    deployment: str = ""  # the deployment that served it (engine.routing), "" when not routed
    message_id: str = ""  # the reply's id (its message's in the graph's state), "" when it has none
    finish_reason: str = ""  # why the reply ended, as the provider said (stop, length, tool_calls...), "" unknown
    kind: str = "chat"  # what the call was: "chat", or "embedding" (an embeddings API call)


@dataclass(frozen=True)
class Attempt:
    """One try of a routed model call on one deployment: the one that answered, or one that failed and why. Only
    the call (LLMCall) carries usage: a failed attempt that was retried had no answer at all."""
    deployment: str  # its label, `model name/deployment name`
    model: str  # the model name it was tried for (a fallback's, after a fallback)
    provider: str
    ok: bool
    duration_ms: int
    error_type: str = ""  # provider_rate_limited, provider_timeout, provider_error
    error: str = ""
    status_code: int | None = None
    cooldown_s: float | None = None  # how long it was kept out of the choice after failing


@dataclass(frozen=True)
class CallStarted:
    """A model call about to wait on its provider: what is needed to account for it if the process running it dies
    before it ends (the recovery sweep estimates it from this)."""
    provider: str
    requested_model: str
    prompt_tokens: int  # estimated from the prompt sent
    streamed_so_far: Callable[[], dict]  # its text and tool-call fragments so far (usage.streamed_so_far); any thread
    max_tokens: int | None = None  # the most it may complete (what a budget reserves for it), per choice
    choices: int = 1  # the completions it asks for (OpenAI's `n`): a budget reserves max_tokens for each
    operation: str = "chat"  # or "embeddings" (GenAI's operation name, on the call's span: workflows.run_spans)
    temperature: float | None = None  # as sent, when Chatter sets it


@dataclass(frozen=True)
class FetchedPrompt:
    """A stored prompt as a model node uses it (RunHooks.prompt): its messages, OpenAI-shaped, with the run's
    variables filled, and its version's config (provider, model, temperature, max_tokens…)."""
    messages: list[dict]
    config: dict


@dataclass(frozen=True)
class ToolOutcome:
    """What one call of an MCP tool gave (RunHooks.tool_run): its text for the model, or why it failed; the server
    that was asked, when there was one."""
    ok: bool
    text: str
    error: str = ""
    server_id: str | None = None


@dataclass(frozen=True)
class RetrievalRequest:
    """A search of knowledge collections (a retrieval node's, a Python graph's retriever): `collections` by id or
    name, as the run's owner sees them; `mode` hybrid, vector or keyword; `filters` on the documents' metadata."""
    query: str
    collections: tuple[str, ...]
    k: int = 5
    mode: str = "hybrid"
    score_threshold: float | None = None
    filters: dict | None = None
    rerank_model: str | None = None  # a model with a rerank API, to rerank the chunks found (as the gateway names it)


# How a search embeds its query in the run: (`provider/model`, texts) -> vectors, each call an LLM call of the run's.
Embed = Callable[[str, list[str]], list[list[float]]]
# How a search reranks what it found in the run: (`provider/model`, query, texts, top_n) -> (index, relevance score)
# of the top_n texts, most relevant first; an LLM call of the run's, of kind `rerank`.
Rerank = Callable[[str, str, list[str], int], list[tuple[int, float]]]

# What a chunk found says of itself, as a retrieval is recorded and an answer cites it.
CITATION_KEYS = ("chunk_id", "document_id", "collection_id", "title", "position", "score")


class RunHooks(Protocol):
    def node_started(self, node: Node) -> None: ...
    def model_call_started(self, node: Node, call: CallStarted) -> None: ...
    # error_type: a failed node's classification, as its run stores it when the failure ends it (RunError's)
    def node_finished(self, node: Node, *, status: str, output: dict, error: str = "",
                      error_type: str = "") -> None: ...
    def node_paused(self, node: Node) -> None: ...  # it waits for input (human_input), and runs again on resume
    def llm_called(self, node: Node, call: LLMCall) -> None: ...
    def provider_attempted(self, node: Node, attempt: Attempt) -> None: ...  # a routed call's tries, each
    # `message`: the tool's message to the model, as the run's state holds it (a JSON workflow's tools node)
    def tool_called(self, node: Node, *, tool: str, arguments: dict, result: str, ok: bool, error: str,
                    duration_ms: int, server_id: str | None = None, cost: Decimal = Decimal("0"),
                    message: ToolMessage | None = None) -> None: ...
    # An MCP tool's price per call (0: unpriced), and whether the run's hard budgets cover one more such call (the
    # budget that has no room, else None).
    def tool_price(self, name: str) -> Decimal: ...
    def tool_cover(self, price: Decimal) -> str | None: ...
    # A tool call about to run (`waits`: it reaches outside the process, an MCP tool, so the run writes first).
    def tool_started(self, node: Node, *, tool: str, call_id: str | None, waits: bool) -> None: ...
    # A registered graph's call of an MCP tool about to be made, its server named: what the call's row must not keep
    # (the server's secrets) is read now, while the server is there (tool_run reads it itself).
    def mcp_call_started(self, *, server_id: str) -> None: ...
    # The MCP tools (OpenAI function schemas) among `patterns` (<server>__<tool>, <server>__*) the run's user may call.
    def tool_schemas(self, patterns: Sequence[str]) -> list[dict]: ...
    def tool_run(self, name: str, arguments: dict, *, timeout_s: float) -> ToolOutcome: ...  # an MCP tool, never raises
    # `message_id`: the reply's id so far; `reply`, with a reply's first token: the model name that answered (a
    # fallback's, after a fallback) and the upstream's system_fingerprint when it sent one
    def token(self, node: Node, text: str, message_id: str | None = None, reply: dict | None = None) -> None: ...
    # A fragment of a tool call: index, id, name, args (LangChain's); `message_id`: the reply's id so far
    def tool_call_delta(self, node: Node, delta: dict, message_id: str | None = None) -> None: ...
    # A registered graph's own stream (engine.python_graphs): its values, updates and custom parts.
    def graph_streamed(self, mode: str, namespace: list[str], data: Any) -> None: ...
    # Which open node the next hook is about (a registered graph's tasks may run at once); returns the open one.
    def node_focus(self, opened: Any = None) -> Any: ...
    def limit_exceeded(self, limit: str, value: Any) -> None: ...
    def cancel_requested(self) -> bool: ...
    def history(self, limit: int) -> list[BaseMessage]: ...
    def documents(self, query: str, limit: int) -> list[dict]: ...
    # The chunks of the named collections (the run's owner's and the shared ones) that best answer the request, best
    # first: each {CITATION_KEYS..., "text"}; the query embedded through `embed`, the chunks found reranked through
    # `rerank` (when the request names a rerank model). A collection the owner cannot see is a RunError.
    def collections_search(self, request: RetrievalRequest, embed: Embed, rerank: Rerank) -> list[dict]: ...
    # A search done (engine.retrieval): the request, the chunks' citations and its latency.
    def retrieved(self, node: Node, record: dict) -> None: ...
    def price(self, provider: str, model: str) -> Price | None: ...
    # A stored prompt by name and label or version (the node's `prompt`); the node's LLM calls record its version.
    def prompt(self, node: Node, ref: dict, variables: dict) -> FetchedPrompt: ...


class NullHooks:
    """Records nothing: the bare engine, as used by benchmarks to measure Chatter's own overhead."""

    def node_started(self, node): pass
    def model_call_started(self, node, call): pass
    def node_finished(self, node, **kwargs): pass
    def node_paused(self, node): pass
    def llm_called(self, node, call): pass
    def provider_attempted(self, node, attempt): pass
    def tool_called(self, node, **kwargs): pass
    def tool_started(self, node, **kwargs): pass
    def mcp_call_started(self, *, server_id): pass
    def tool_schemas(self, patterns): return []
    def tool_price(self, name): return Decimal("0")
    def tool_cover(self, price): return None
    def tool_run(self, name, arguments, *, timeout_s):
        return ToolOutcome(ok=False, text="", error="MCP tools are called by a recorded run only")
    def token(self, node, text, message_id=None, reply=None): pass
    def tool_call_delta(self, node, delta, message_id=None): pass
    def graph_streamed(self, mode, namespace, data): pass
    def node_focus(self, opened=None): return opened
    def limit_exceeded(self, limit, value): pass
    def cancel_requested(self): return False
    def history(self, limit): return []
    def documents(self, query, limit): return []
    def collections_search(self, request, embed, rerank):
        raise RunError("collections are searched by a recorded run only")
    def retrieved(self, node, record): pass
    def price(self, provider, model): return None
    def prompt(self, node, ref, variables): raise RunError("a stored prompt is fetched by a recorded run only")
