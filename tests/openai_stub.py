"""A real HTTP server that speaks the OpenAI Chat Completions API, for provider tests.

Only the process boundary is faked: the `openai` provider talks HTTP to this server exactly as it would
to OpenAI or any compatible server. Replies are scripted in order with `reply()`; a request that finds
the queue empty gets a 500 with an OpenAI-style error body.

    with OpenAIStub() as stub:
        stub.reply(content="The answer is 84.", usage={"prompt_tokens": 10, "completion_tokens": 5,
                                                         "total_tokens": 15})
        client = OpenAI(base_url=stub.base_url, api_key="test", max_retries=0)
        ...
        assert stub.requests[0].body["messages"][-1]["content"] == "…"

Clients retry 429 and 5xx by default (openai and langchain-openai: max_retries=2); a test that scripts
an error should set max_retries=0, or script one reply per attempt (`headers={"retry-after-ms": "10"}`
keeps the client's back-off short).

Faults, for provider fault tests (streamed replies; `fault_after` counts the data chunks written first,
None meaning all of them, so after the usage chunk when the request asked for usage):
- fault="reset": the connection is reset (TCP RST) instead of finishing the stream.
- fault="close": the connection is closed cleanly (FIN) part-way through a body whose Content-Length promised
  the whole stream, as a server that dies mid-reply looks to its client.
- fault="burst": the answer's head and its first `fault_after` chunks in one write, in chunked encoding (HTTP/1.1),
  then a clean close without the terminating chunk: a server that sent a few chunks at once and died, all of them
  in its client's buffer by the time the connection's end is read.
- fault="malformed": a chunk that is not valid JSON, then the rest of the stream.
- fault="stall": the stream stops for `stall_s` seconds, then goes on (a hung server, for timeouts).
- fault="end": the stream ends cleanly after `fault_after` chunks, with no finish reason and no `[DONE]` (a server
  that stops short without a word).
- A stream that breaks after tool-call deltas only: `tool_calls=[…]` with fault="reset" or "close" and
  `fault_after` counting the role chunk, then per call its header (id, name) and its argument chunks; with
  `argument_chunk_chars=N` the arguments come in N-character fragments (as servers stream them token by
  token), so the break can fall in the middle of a call's JSON.
- usage_every_chunk=True: the usage object rides on every chunk, growing cumulatively (as some servers
  send it); the final usage chunk still carries the final figures.

Parameters, as OpenAI answers them: a request with `logprobs: true` gets a logprob per word chunk (with its
`top_logprobs` alternatives), on each streamed content chunk or in the choice; `more_choices=["…", …]` answers a
request with `n` > 1 with those as choices 1, 2, … (`usage` then counts them all, as OpenAI's does).

`POST /v1/embeddings` takes the next scripted reply too (its `usage`, `status`, `delay_s`; `model`): each input gets
`stub_embedding(input, dimensions)`, of `embedding_sizes[i]` dimensions for the i-th input when the reply names one (a
server answering a vector of the wrong size).

`POST /v1/rerank` (Cohere's and Jina's rerank API, as llama.cpp's server speaks it: `{"model", "query", "documents",
"top_n"}`) takes the next scripted reply (its `usage`, `status`, `delay_s`, `model`): each document is scored by
`relevance_scores=[…]` (one per document, in order) when the reply has them, else by `stub_relevance(query,
document)`; the answer's `results` ({index, relevance_score}) are the best `top_n`, most relevant first, or the reply's
`rerank_results` as given (a server naming one document twice).

A reply scripted with `hold=True` is held: its request waits (after `delay_s`) until the test calls `release()`, at
most HOLD_MAX_S, so a test acts while the call is surely under way (a cancel, a disconnect) however loaded the machine,
then lets it be answered. `release()` answers every held reply scripted so far: those waiting now, and those whose
requests come later; a reply scripted after it is held until the next `release()`.

`always(…)` (the arguments of `reply()`) answers every request the scripted replies leave unanswered the same way, for
as long as the test runs: a server that is down (`always(status=500)`), rate limited (`always(status=429,
headers={"retry-after": "30"})`), hung (`always(delay_s=5)`) or healthy (`always(content="…", usage={…})`) however
many requests reach it; `always()` without arguments goes back to the 500 of an empty queue.

`POST /v1/messages` speaks Anthropic's Messages API with the next scripted reply (its `content`, `status`, `delay_s`,
`headers`, `model`; `usage` as Anthropic counts: `{"input_tokens": …, "output_tokens": …}`), streamed as Anthropic's
events when asked, for `anthropic` deployments (their base URL: `stub.root_url`). A reply with `tool_calls=[…]`
answers as Anthropic does when a model calls tools: its text block (none when the reply has no text), then a
`tool_use` block per call (`id`, `name`, `input`: the arguments parsed, so they must be a JSON object when answered
whole), and stop_reason "tool_use"; streamed, each call's content_block_start carries `input: {}`, then its arguments
come as input_json_delta `partial_json` fragments (of `argument_chunk_chars` characters when given, else whole), then
its content_block_stop. A reply without tool calls is one text block and stop_reason "end_turn". `text_blocks=[…]`
answers the text in those blocks instead, one after the other (as Anthropic splits a reply's text: around a
citation, a server tool's result), each streamed word by word; OpenAI's answers carry `content` as ever. A stream
with fault="reset" is reset after its first `fault_after` events.

`GET /v1/models` lists `served_models` (set it to what the server should serve); those listings are counted in
`model_listings`, not kept in `requests`. `connections` counts the TCP connections the stub accepted.

For a benchmark (bench/b8_stub.py): `always(...)` takes `reply()`'s arguments and answers every request that finds no
scripted reply with them; `OpenAIStub(port=N, keep_alive=True, keep_requests=False)` listens on port N, keeps
connections open between answers (HTTP/1.1, streams in chunks, as OpenAI's servers do) and does not keep what it
received.
"""
from __future__ import annotations

import itertools
import json
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMPLETIONS_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
RERANK_PATH = "/v1/rerank"
MESSAGES_PATH = "/v1/messages"  # Anthropic's
MODELS_PATH = "/v1/models"
FAULTS = (None, "reset", "close", "malformed", "stall", "end", "burst")
# What /v1/models lists unless a test says otherwise.
SERVED_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
HOLD_MAX_S = 60  # a held reply is answered after this long even if the test never releases it
MALFORMED_CHUNK = '{"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "oops'

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class StubRequest:
    """One request the stub received. `headers` has lower-case names; `body` is the parsed JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class StubReply:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    model: str = "gpt-4o-mini"
    finish_reason: str | None = None
    chunk_words: bool = True
    status: int = 200
    error_body: dict[str, Any] | None = None
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    fault_after: int | None = None
    stall_s: float = 0.0
    usage_every_chunk: bool = False
    argument_chunk_chars: int | None = None
    more_choices: list[str] = field(default_factory=list)
    relevance_scores: list[float] | None = None
    completion_id: str | None = None  # the reply's id (its chunks'), else chatcmpl-stub-<n>
    no_choices: bool = False  # answered whole with `"choices": []` (and its usage), as some servers do
    embedding_sizes: dict[int, int] | None = None
    rerank_results: list[dict[str, Any]] | None = None
    text_blocks: list[str] = field(default_factory=list)  # Anthropic's answer: the text's blocks
    held: threading.Event | None = None  # (hold=True) answered once it is set: release()
    body: Any = None  # a whole answer sent as this JSON, whatever it holds


def logprob_entry(token: str, position: int, top: int) -> dict[str, Any]:
    """A deterministic logprob for the token at `position`, with `top` alternatives."""
    logprob = -0.25 * (position + 1)
    alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
    alternatives += [{"token": f"alt{i}", "logprob": logprob - i, "bytes": list(f"alt{i}".encode())}
                     for i in range(1, top)]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def stub_embedding(item: Any, dimensions: int | None = None) -> list[float]:
    """The stub's vector for one input: its length, then 0.5, 0.25, … (`dimensions` of them, 3 by default)."""
    size = dimensions or 3
    return [float(len(item))] + [0.5 ** i for i in range(1, size)]


def _embeddings(reply: StubReply, request: dict[str, Any]) -> dict[str, Any]:
    inputs = request["input"] if isinstance(request["input"], list) and not isinstance(
        request["input"][0], int) else [request["input"]]
    return {"object": "list", "model": reply.model,
            "data": [{"object": "embedding", "index": index, "embedding": stub_embedding(
                item, (reply.embedding_sizes or {}).get(index, request.get("dimensions")))}
                for index, item in enumerate(inputs)],
            "usage": reply.usage}


def stub_relevance(query: str, document: str) -> float:
    """The share of the query's words the document has (case-blind)."""
    asked = set(re.findall(r"\w+", query.lower()))
    return len(asked & set(re.findall(r"\w+", document.lower()))) / max(len(asked), 1)


def _rerank(reply: StubReply, request: dict[str, Any]) -> dict[str, Any]:
    documents = request["documents"]
    scores = reply.relevance_scores or [stub_relevance(request["query"], document) for document in documents]
    ranked = sorted(range(len(documents)), key=lambda index: (-scores[index], index))
    results = reply.rerank_results if reply.rerank_results is not None else [
        {"index": index, "relevance_score": scores[index]} for index in ranked[:request.get("top_n") or len(documents)]]
    return {"model": reply.model, "object": "list", "usage": reply.usage, "results": results}


def error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-style error object for an HTTP status."""
    error_type, code = _ERROR_TYPES.get(status, ("server_error", "server_error"))
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def split_words(text: str) -> list[str]:
    """Word-sized chunks that join back to exactly `text` (each chunk keeps its trailing whitespace)."""
    return [part for part in re.split(r"(?<=\s)(?=\S)", text) if part]


class OpenAIStub:
    """An OpenAI-compatible HTTP server on 127.0.0.1 (a free port), served from a daemon thread."""

    def __init__(self, *, port: int = 0, keep_alive: bool = False, keep_requests: bool = True) -> None:
        self.port_asked, self.keep_alive, self.keep_requests = port, keep_alive, keep_requests
        self.requests: list[StubRequest] = []
        self.served_models: list[str] = list(SERVED_MODELS)
        self.model_listings = 0
        self.connections = 0  # TCP connections accepted
        self._replies: deque[StubReply] = deque()
        self._always: StubReply | None = None
        self._holds: list[threading.Event] = []  # those of the held replies not yet released
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> OpenAIStub:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self.port_asked), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="openai-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.release()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("OpenAIStub is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server without the /v1 of OpenAI's clients (Anthropic's client adds its own)."""
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> OpenAIStub:
        """Forget what was scripted and received, as a new stub would (the same port): a stub shared by the tests
        of a session (tests/fixtures_openai.py) starts each test this way."""
        with self._lock:
            self.requests = []
            self.served_models = list(SERVED_MODELS)
            self.model_listings = self.connections = 0
            self._replies.clear()
            self._always = None
            self._ids = itertools.count(1)
        self.release()  # (a call a failed test left held ends now)
        return self

    # --- scripting ---------------------------------------------------------------------------------
    def reply(
        self,
        content: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        usage: dict[str, Any] | None = None,
        model: str = "gpt-4o-mini",
        finish_reason: str | None = None,
        chunk_words: bool = True,
        status: int = 200,
        error_body: dict[str, Any] | None = None,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        headers: dict[str, str] | None = None,
        fault: str | None = None,
        fault_after: int | None = None,
        stall_s: float = 0.0,
        usage_every_chunk: bool = False,
        argument_chunk_chars: int | None = None,
        more_choices: list[str] | None = None,
        relevance_scores: list[float] | None = None,
        completion_id: str | None = None,
        no_choices: bool = False,
        embedding_sizes: dict[int, int] | None = None,
        rerank_results: list[dict[str, Any]] | None = None,
        text_blocks: list[str] | None = None,
        hold: bool = False,
        body: Any = None,
    ) -> OpenAIStub:
        """Queue the answer to the next request.

        tool_calls: [{"name": "calculator", "arguments": {"expression": "12*7"}}, …]; `arguments` may be a
        dict (sent as JSON) or a string (sent as is); an optional "id" overrides the generated one.
        usage: the full OpenAI usage object, or None for a server that reports none.
        finish_reason: defaults to "tool_calls" when there are tool calls, else "stop".
        status: anything but 200 answers with `error_body` (default: an OpenAI-style error).
        delay_s: wait before answering; chunk_delay_s: wait between streamed chunks.
        headers: extra response headers (e.g. retry-after-ms on an error).
        fault, fault_after, stall_s, usage_every_chunk, argument_chunk_chars, more_choices, relevance_scores,
        embedding_sizes, rerank_results, text_blocks, hold: see the module docstring. body: a whole answer that is
        this JSON as it is, whatever it holds (a server's malformed answer; Python's json writes inf as Infinity,
        as a careless server does), with `status` (200 by default); to a streamed request, a list of the chunks to
        send as they are, then `[DONE]` (anything else, to it too, is answered whole as JSON: a server that answers
        a stream's request with an error object). completion_id: the reply's id
        (default: chatcmpl-stub-<n>). no_choices: a whole answer with no choice (`"choices": []`), its usage all the
        same.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        calls = []
        for call in tool_calls or []:
            arguments = call.get("arguments", {})
            calls.append(
                {
                    "id": call.get("id") or f"call_stub_{next(self._ids)}",
                    "name": call["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                }
            )
        held = threading.Event() if hold else None
        with self._lock:
            if held is not None:
                self._holds.append(held)
            self._replies.append(
                StubReply(
                    content=content,
                    tool_calls=calls,
                    usage=usage,
                    model=model,
                    finish_reason=finish_reason or ("tool_calls" if calls else "stop"),
                    chunk_words=chunk_words,
                    status=status,
                    error_body=error_body,
                    delay_s=delay_s,
                    chunk_delay_s=chunk_delay_s,
                    headers=dict(headers or {}),
                    fault=fault,
                    fault_after=fault_after,
                    stall_s=stall_s,
                    usage_every_chunk=usage_every_chunk,
                    argument_chunk_chars=argument_chunk_chars,
                    more_choices=list(more_choices or []),
                    relevance_scores=list(relevance_scores) if relevance_scores is not None else None,
                    completion_id=completion_id,
                    no_choices=no_choices,
                    embedding_sizes=dict(embedding_sizes) if embedding_sizes is not None else None,
                    rerank_results=list(rerank_results) if rerank_results is not None else None,
                    text_blocks=list(text_blocks) if text_blocks else [content] if content or not calls else [],
                    held=held,
                    body=body,
                )
            )
        return self

    def always(self, **reply) -> OpenAIStub:
        """Answer every request the scripted replies leave unanswered as `reply(**reply)` would (see the module
        docstring); no arguments: an empty queue's 500 again."""
        if not reply:
            with self._lock:
                self._always = None
            return self
        self.reply(**reply)
        with self._lock:
            self._always = self._replies.pop()
        return self

    def release(self) -> OpenAIStub:
        """Answer the held replies scripted so far (hold=True): those waiting now, and those not yet asked for."""
        with self._lock:
            holds, self._holds = self._holds, []
        for held in holds:
            held.set()
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._replies)

    @property
    def last_request(self) -> StubRequest:
        with self._lock:
            return self.requests[-1]

    def _record(self, request: StubRequest) -> StubReply | None:
        with self._lock:
            if self.keep_requests:
                self.requests.append(request)
            return self._replies.popleft() if self._replies else self._always

    def _next_id(self) -> str:
        return f"chatcmpl-stub-{next(self._ids)}"


def _logprobs(text: str, request: dict[str, Any]) -> dict[str, Any] | None:
    """The logprobs of `text` (one per word chunk) when the request asked for them, else None."""
    if not request.get("logprobs"):
        return None
    top = request.get("top_logprobs") or 0
    return {"content": [logprob_entry(part, i, top) for i, part in enumerate(split_words(text))], "refusal": None}


def _completion(reply: StubReply, completion_id: str, request: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content if (reply.content or not reply.tool_calls) else None,
        "refusal": None,
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in reply.tool_calls
        ]
    choices = [{"index": 0, "message": message, "logprobs": _logprobs(reply.content, request),
                "finish_reason": reply.finish_reason}]
    for index, text in enumerate(reply.more_choices[:max(0, (request.get("n") or 1) - 1)], start=1):
        choices.append({"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": _logprobs(text, request), "finish_reason": "stop"})
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model,
        "choices": [] if reply.no_choices else choices,
        "system_fingerprint": "fp_stub",
    }
    if reply.usage is not None:
        body["usage"] = reply.usage
    return body


def _chunks(reply: StubReply, completion_id: str, include_usage: bool, request: dict[str, Any]) -> list[dict[str, Any]]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None,
              index: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": reply.model,
            "system_fingerprint": "fp_stub",
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }
        if include_usage:
            data["usage"] = None  # as OpenAI does: null on every chunk but the last
        return data

    chunks = [chunk({"role": "assistant", "content": "" if reply.content or not reply.tool_calls else None})]
    if reply.content:
        parts = split_words(reply.content) if reply.chunk_words else [reply.content]
        top = request.get("top_logprobs") or 0
        chunks.extend(chunk({"content": part}, logprobs={"content": [logprob_entry(part, i, top)], "refusal": None}
                            if request.get("logprobs") else None) for i, part in enumerate(parts))
    for index, call in enumerate(reply.tool_calls):
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        size = reply.argument_chunk_chars or len(call["arguments"]) or 1
        fragments = [call["arguments"][start:start + size] for start in range(0, len(call["arguments"]), size)]
        chunks.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                      for fragment in fragments or [""])
    chunks.append(chunk({}, reply.finish_reason))
    # the other choices of a call for several (`n`), as OpenAI streams them: each in chunks of its own index
    for index, text in enumerate(reply.more_choices[:max(0, (request.get("n") or 1) - 1)], start=1):
        chunks += [chunk({"role": "assistant", "content": text}, index=index), chunk({}, "stop", index=index)]
    if include_usage and reply.usage is not None and reply.usage_every_chunk:
        for index, data in enumerate(chunks, start=1):
            data["usage"] = _usage_so_far(reply.usage, index / len(chunks))
    if include_usage and reply.usage is not None:
        chunks.append(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": reply.model,
                "system_fingerprint": "fp_stub",
                "choices": [],
                "usage": reply.usage,
            }
        )
    return chunks


def _anthropic_blocks(reply: StubReply) -> list[dict[str, Any]]:
    """A reply's content blocks as Anthropic answers them whole: its text blocks (none when it only calls tools),
    then a tool_use block per call."""
    text = [{"type": "text", "text": block} for block in reply.text_blocks]
    return text + [{"type": "tool_use", "id": call["id"], "name": call["name"], "input": json.loads(call["arguments"])}
                   for call in reply.tool_calls]


def _anthropic_stop_reason(reply: StubReply) -> str:
    return "tool_use" if reply.tool_calls else "end_turn"


def _anthropic_events(reply: StubReply, message_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A reply as Anthropic streams it: the message's start (its input tokens), each text block word by word, each
    tool_use block with its arguments in input_json_delta fragments, and the message's end with the usage in full
    (Anthropic's message_delta counts are cumulative)."""
    usage = reply.usage or {}
    start = {"id": message_id, "type": "message", "role": "assistant", "model": reply.model, "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": usage.get("input_tokens", 0), "output_tokens": 0}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(reply.text_blocks):
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index,
                                     "content_block": {"type": "text", "text": ""}}),
            *(("content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": {"type": "text_delta", "text": part}})
              for part in split_words(block)),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    for call in reply.tool_calls:
        index, arguments = len([name for name, _ in events if name == "content_block_start"]), call["arguments"]
        size = reply.argument_chunk_chars or len(arguments) or 1
        events += [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}}),
            *(("content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": {"type": "input_json_delta", "partial_json": arguments[at:at + size]}})
              for at in range(0, len(arguments), size)),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    return events + [
        ("message_delta", {"type": "message_delta", "usage": usage,
                           "delta": {"stop_reason": _anthropic_stop_reason(reply), "stop_sequence": None}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def _usage_so_far(usage: dict[str, Any], fraction: float) -> dict[str, Any]:
    """A cumulative report part-way through a stream: the prompt in full, the completion so far."""
    completion = int(usage.get("completion_tokens", 0) * fraction)
    prompt = usage.get("prompt_tokens", 0)
    return {**usage, "completion_tokens": completion, "total_tokens": prompt + completion}


def _make_handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a stream simply ends when the connection closes; with keep_alive,
        # HTTP/1.1 (_send_stream sends a stream in chunks).
        protocol_version = "HTTP/1.1" if stub.keep_alive else "HTTP/1.0"
        # A kept connection's next answer must not wait for the client's delayed ACK of the last one (Nagle).
        disable_nagle_algorithm = stub.keep_alive
        server_version = "OpenAIStub/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def setup(self) -> None:  # one handler per connection
            with stub._lock:
                stub.connections += 1
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?", 1)[0].rstrip("/") == MODELS_PATH:
                with stub._lock:
                    stub.model_listings += 1
                    served = list(stub.served_models)
                self._send_json(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "created": 1700000000, "owned_by": "stub"} for name in served]})
                return
            self._record_request(None)
            self._send_json(404, error_body(404, f"Unknown path {self.path}"))

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                self._record_request(raw.decode("utf-8", "replace"))
                self._send_json(400, error_body(400, "The request body is not valid JSON."))
                return
            path = self.path.split("?", 1)[0].rstrip("/")
            if path not in (COMPLETIONS_PATH, EMBEDDINGS_PATH, RERANK_PATH, MESSAGES_PATH):
                self._record_request(body)
                self._send_json(404, error_body(404, f"Unknown path {self.path}"))
                return
            reply = stub._record(self._request(body))
            if reply is None:
                self._send_json(500, error_body(500, "OpenAIStub: no scripted reply left for this request."))
                return
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.held is not None:
                reply.held.wait(HOLD_MAX_S)
            if isinstance(reply.body, list) and isinstance(body, dict) and body.get("stream"):
                self._send_stream(list(reply.body), reply)
                return
            if reply.body is not None:
                self._send_json(reply.status, reply.body, reply.headers)
                return
            if reply.status != 200:
                self._send_json(reply.status, reply.error_body or error_body(reply.status, "Scripted error."),
                                reply.headers)
                return
            if path == EMBEDDINGS_PATH:
                self._send_json(200, _embeddings(reply, body), reply.headers)
                return
            if path == RERANK_PATH:
                self._send_json(200, _rerank(reply, body), reply.headers)
                return
            if path == MESSAGES_PATH:
                events = _anthropic_events(reply, stub._next_id().replace("chatcmpl", "msg"))
                if body.get("stream"):
                    self._send_events(events, reply)
                else:
                    message = {**events[0][1]["message"], "content": _anthropic_blocks(reply),
                               "stop_reason": _anthropic_stop_reason(reply), "usage": reply.usage or {}}
                    self._send_json(200, message, reply.headers)
                return
            completion_id = reply.completion_id or stub._next_id()
            if isinstance(body, dict) and body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._send_stream(_chunks(reply, completion_id, include_usage, body), reply)
            else:
                self._send_json(200, _completion(reply, completion_id, body if isinstance(body, dict) else {}),
                                reply.headers)

        def _request(self, body: Any) -> StubRequest:
            headers = {name.lower(): value for name, value in self.headers.items()}
            return StubRequest(method=self.command, path=self.path, headers=headers, body=body)

        def _record_request(self, body: Any) -> None:
            with stub._lock:
                if stub.keep_requests:
                    stub.requests.append(self._request(body))

        def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def _send_stream(self, chunks: list[dict[str, Any]], reply: StubReply) -> None:
            fault_at = len(chunks) if reply.fault_after is None else reply.fault_after
            if reply.fault == "close":
                self._send_stream_cut(chunks, reply, fault_at)
                return
            if reply.fault == "burst":
                self._send_stream_burst(chunks, reply, fault_at)
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                # Kept alive, a stream is sent in chunks (HTTP/1.1), as OpenAI's servers send theirs, and the
                # connection serves the next request; a stream that breaks closes it.
                chunked = stub.keep_alive and reply.fault is None
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif stub.keep_alive:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()

                def write(data: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

                for index, data in enumerate([*chunks, None]):
                    if index == fault_at and reply.fault == "reset":
                        self._reset()
                        return
                    if index == fault_at and reply.fault == "malformed":
                        write(f"data: {MALFORMED_CHUNK}\n\n".encode())
                    if index == fault_at and reply.fault == "end":
                        self.wfile.flush()
                        return  # (HTTP/1.0: the connection closes cleanly as the handler returns)
                    if index == fault_at and reply.fault == "stall":
                        self.wfile.flush()
                        time.sleep(reply.stall_s)
                    if data is None:
                        break
                    if reply.chunk_delay_s and index:
                        time.sleep(reply.chunk_delay_s)
                    write(f"data: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                write(b"data: [DONE]\n\n")
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (e.g. a cancelled run); nothing to clean up

        def _send_events(self, events: list[tuple[str, dict[str, Any]]], reply: StubReply) -> None:
            """Named server-sent events (Anthropic's stream)."""
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for index, (name, data) in enumerate(events):
                    if index == reply.fault_after and reply.fault == "reset":
                        self._reset()
                        return
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _send_stream_cut(self, chunks: list[dict[str, Any]], reply: StubReply, fault_at: int) -> None:
            """The whole stream's length announced, its first `fault_at` chunks sent, then a clean close."""
            frames = [f"data: {json.dumps(data)}\n\n".encode() for data in chunks] + [b"data: [DONE]\n\n"]
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Content-Length", str(sum(len(frame) for frame in frames)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for frame in frames[:fault_at]:
                    self.wfile.write(frame)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True  # HTTP/1.0: the handler closes the connection as it returns

        def _send_stream_burst(self, chunks: list[dict[str, Any]], reply: StubReply, fault_at: int) -> None:
            """The answer's head and its first `fault_after` chunks (HTTP/1.1 chunked) in one write, then a clean
            close, without the terminating chunk."""
            frames = [f"data: {json.dumps(data)}\n\n".encode() for data in chunks[:fault_at]]
            head = [b"HTTP/1.1 200 OK", b"Content-Type: text/event-stream; charset=utf-8", b"Transfer-Encoding: chunked",
                    *(f"{name}: {value}".encode() for name, value in reply.headers.items())]
            body = b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames)
            try:
                self.wfile.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        def _reset(self) -> None:
            """Abort the connection: SO_LINGER 0 makes close() send a TCP RST instead of a clean FIN."""
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

    return Handler
