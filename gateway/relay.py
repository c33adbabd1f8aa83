"""A pass-through call's stream relayed (gateway.passthrough): the upstream's events read on the gateway's upstream loop
(gateway.upstream) and passed on to the client's as they come, what they say kept for the call's accounting. It
stops where the run path's would (engine.runtime): at a token boundary past what a hard budget reserved (checked only
under one), and at the next chunk once the run is cancelled (asked every CANCEL_POLL_S, as a run polls)."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING

import aiohttp
from asgiref.sync import sync_to_async

from core.errors import BudgetExceeded, ProviderError, RunCancelled, RunError
from engine.chat_messages import json_object
from engine.provider_failures import answered_error_failure, error_object, upstream_facts
from engine.usage import openai_usage_readable, usage_cut_short, usage_from_openai
from gateway.errors import execution_failure
from gateway.services import usage_body
from gateway.upstream import StreamedBody, upstream_submit
from workflows.cancels import CANCEL_POLL_S
from workflows.models import WorkflowExecution

if TYPE_CHECKING:
    from gateway.passthrough import Passing

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status
# What a call that got no whole answer raises, through aiohttp.
_UPSTREAM_ERRORS = (aiohttp.ClientError, OSError)


def budget_stop(recorder, text: str) -> BudgetExceeded | None:
    """Text of a call under a hard budget: its stop when the call has gone past what the budget reserved for it
    (workflows.spending.BudgetGuard.past), recorded as the run path records it (a `limit_exceeded` event and audit
    row); else None."""
    refused = recorder.budget.past(text)
    if refused is None:
        return None
    recorder.limit_exceeded("budget", refused)
    return BudgetExceeded("budget", refused, f"the run reached budget {refused}")


class StreamRelay:
    """One upstream stream relayed: its events as they came, what they say kept for the accounting."""

    def __init__(self, passing: Passing, body: StreamedBody, *, failure, close):
        """`body`: the upstream's, read since its answer opened; `failure(passing, exc, mid_stream=True)`: a broken
        upstream as the call's ProviderError; `close(passing, **end)`, awaited: the call's end recorded
        (gateway.passthrough)."""
        self.passing, self.body = passing, body
        self.failure, self.ended = failure, close
        self.buffer = b""
        self.upstream_id: re.Pattern | None = None  # the upstream's id as an event's `id` field says it
        self.own_id = f"chatcmpl-{passing.execution.pk.hex}".encode()
        self.own_id_field = b'"id":"' + self.own_id + b'"'
        self.usage: dict | None = None
        self.usage_chunk: dict | None = None
        self.model = ""
        self.message_id = ""
        self.ending: dict = {}
        self.calls: dict = {}
        self.done = False
        self.answered_whole = False  # an error object, whole: the call failed as one answered whole (no LLM call)
        self.hard = passing.recorder.budget.hard  # (its text is checked against the budget only under a hard one)
        self.stop: RunError | None = None  # what stops the relay at the next chunk: a budget's stop, a cancel
        self.said = False  # the reply's first word came (a text, a tool call's fragment)
        self.answerable = threading.Event()  # said, or the upstream's stream ended
        self.held: list | None = []  # what the upstream relayed before the client's stream was there to take it
        self.put = None  # (then) how it reaches the client's stream
        self.lock = threading.Lock()
        self.pumped = None

    def first_word_wait(self, *, timeout_s: float) -> RunError | None:
        """On the request's thread: the upstream read from now on (its events held for the client's stream), until the
        reply's first word or the stream's end, at most `timeout_s` (the upstream's own read timeout ends a silent
        one before). The call's failure when it ended without a word, the answer then whole (nothing was relayed);
        else None."""
        self.pumped = upstream_submit(self.pump(self._relayed))
        if not self.answerable.wait(timeout_s) or self.said:
            return None
        return self.failure_at_end(self.pumped.result())  # (ended: its result follows at once)

    def _relayed(self, out) -> None:
        with self.lock:
            if self.held is not None:
                self.held.append(out)
            else:
                self.put(out)
        if out is None or self.said:
            self.answerable.set()

    async def frames(self):
        """The client's stream. The upstream is read on the upstream loop (`pump`, from first_word_wait), which goes
        on to the end when the client goes away, so the call is accounted for all the upstream produced (`end`, on
        this loop: the request's thread is the one its accounting runs on); the client's stream waits for that either
        way."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        with self.lock:
            for out in self.held:
                queue.put_nowait(out)
            self.held, self.put = None, lambda out: loop.call_soon_threadsafe(queue.put_nowait, out)
        ended = asyncio.ensure_future(self.end(asyncio.wrap_future(self.pumped)))
        polled = time.monotonic()
        try:
            while (out := await queue.get()) is not None:
                yield out
                if self.stop is None and time.monotonic() - polled >= CANCEL_POLL_S:
                    polled = time.monotonic()
                    await self.cancel_poll()
            yield self.last(await ended)
        finally:
            await asyncio.shield(ended)

    async def cancel_poll(self) -> None:
        """Whether the run was cancelled (on the request's thread, where its recorder is used): then the relay stops."""
        try:
            if await sync_to_async(self.passing.recorder.cancel_requested, thread_sensitive=True)():
                self.stop = RunCancelled("the run was cancelled")
        except RunError as exc:  # ended elsewhere (the recovery sweep)
            self.stop = exc

    async def pump(self, put) -> RunError | None:
        """The upstream's events relayed (`put`, then None at the end), on the upstream loop; what ended it: the
        upstream's failure, or the relay's stop (its upstream left unread: the connection is closed)."""
        error = None
        try:
            async for piece in self.body:
                if self.stop is None:
                    out = self.feed(piece)
                    if out:
                        put(out)
                if self.stop is not None:
                    error = self.stop
                    break
        except _UPSTREAM_ERRORS as exc:
            error = self.failure(self.passing, exc, mid_stream=True)
        except Exception as exc:  # noqa: BLE001 - whatever broke the relay, the call is still ended and accounted
            logger.exception("gateway pass-through: the relay of %s failed", self.passing.execution.pk)
            error = RunError(f"{type(exc).__name__}: {exc}", error_type="internal_error")
        finally:
            self.body.release()  # its connection back to the pool (closed when not read to its end)
            put(None)
        return error

    async def end(self, pumped: asyncio.Future) -> WorkflowExecution:
        return await self.close(await pumped)

    def feed(self, piece: bytes) -> bytes:
        """The events of `piece` to relay (whole events only; a partial one waits for its end)."""
        self.buffer += piece.replace(b"\r\n", b"\n")
        out = []
        while (cut := self.buffer.find(b"\n\n")) >= 0:
            event, self.buffer = self.buffer[:cut + 2], self.buffer[cut + 2:]
            if self.read(event):  # (the run's id in place of the upstream's: the `id` field's value only)
                out.append(self.upstream_id.sub(self.own_id_field, event, count=1) if self.upstream_id else event)
            if self.stop is not None:  # (the event that went past a budget is the last relayed, as on the run path)
                break
        return b"".join(out)

    def read(self, event: bytes) -> bool:
        """Keep what an event says (its text, tool calls, usage); whether it is relayed now."""
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return True
        if data == b"[DONE]":
            self.done = True
            return False  # sent after the run's end
        try:
            chunk = json.loads(data)
        except ValueError:  # the upstream failing, as the run path's client reads it: the relay stops here
            self.stop = self.stop or ProviderError("openai stream sent a chunk that is not JSON",
                                                   error_type="provider_error", upstream=upstream_facts(status=None))
            return False
        if not isinstance(chunk, dict):
            return True  # relayed as it came; nothing of it is counted
        if "error" in chunk and not chunk.get("choices"):  # the upstream failing, as on the run path: it stops here
            self.stop = self.stop or self._answered_error(chunk)
            return False
        if self.upstream_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
            said = re.escape(json.dumps(chunk["id"])[1:-1].encode())  # (as JSON writes it)
            self.upstream_id = re.compile(rb'"id"\s*:\s*"' + said + rb'"')
            self.message_id = chunk["id"]
        self.model = text_or_empty(chunk.get("model")) or self.model
        if text_or_empty(chunk.get("system_fingerprint")):
            self.ending["system_fingerprint"] = chunk["system_fingerprint"]
        if openai_usage_readable(chunk.get("usage")):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if text_or_empty(delta.get("content")):
                self.said = True
                self.passing.text.append(delta["content"])
                if self.hard:
                    self.stop = self.stop or budget_stop(self.passing.recorder, delta["content"])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(call)
            if text_or_empty(choice.get("finish_reason")):
                self.ending["finish_reason"] = choice["finish_reason"]
        if isinstance(chunk.get("usage"), dict) and not choices:
            self.usage_chunk = chunk
            return False  # sent after the run's end, with its cost, when the client asked for it
        return True

    def _tool_call(self, call: dict) -> None:
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        name, arguments = text_or_empty(function.get("name")), text_or_empty(function.get("arguments"))
        index = call.get("index") if isinstance(call.get("index"), int) else len(self.calls)
        kept = self.calls.setdefault(index, {"id": text_or_empty(call.get("id")), "type": "function",
                                             "function": {"name": "", "arguments": ""}})
        kept["function"]["name"] += name
        kept["function"]["arguments"] += arguments
        self.passing.tool_text.append(name + arguments)
        self.said = self.said or bool(name + arguments)
        if self.hard and arguments:
            self.stop = self.stop or budget_stop(self.passing.recorder, arguments)

    def failure_at_end(self, error: RunError | None) -> RunError | None:
        """What failed the call once its upstream's stream ended (`error`: what ended it, if anything)."""
        if error is None and not self.done:
            answered = json_object(self.buffer)  # (a stream's request answered with an error object, whole)
            if answered is not None and "error" in answered and not answered.get("choices"):
                self.answered_whole = True
                return self._answered_error(answered)
            return ProviderError("openai stream ended before [DONE]", error_type="provider_error",
                                 upstream=upstream_facts(status=None))
        return error

    def _answered_error(self, said: dict) -> ProviderError:
        return answered_error_failure(error_object(said) or {}, provider="openai", url=self.passing.url)

    def end_of_call(self, error: RunError | None) -> dict:
        """The call's end (gateway.passthrough._ended's arguments) once its upstream's stream ended."""
        passing = self.passing
        error = self.failure_at_end(error)
        # Cut short before the upstream said, or said what no count is: estimated over its prompt and what it sent
        # (a relay reads an upstream that answered 200: it took the prompt, even when nothing it sent was read).
        usage = usage_from_openai(self.usage) if self.usage is not None else None if self.answered_whole else \
            usage_cut_short(prompt_tokens=passing.prompt_tokens, streamed=passing.so_far())
        calls = [self.calls[index] for index in sorted(self.calls)]
        ending = {**self.ending, **({"tool_calls": calls} if calls else {})}
        return {"usage": usage, "reported_model": self.model or passing.requested_model, "error": error,
                "content": "".join(passing.text), "ending": ending, "message_id": self.message_id}

    async def close(self, error: RunError | None) -> WorkflowExecution:
        return await self.ended(self.passing, **self.end_of_call(error))

    def last(self, ended: WorkflowExecution) -> bytes:
        """What follows the upstream's chunks: the usage (asked for), then `[DONE]`; or the failure's error object."""
        if ended.status != Status.COMPLETED:
            failed = execution_failure(ended, model=self.passing.model).body
            return b"data: " + json.dumps(failed, separators=(",", ":")).encode() + b"\n\n"
        out = b""
        if self.passing.include_usage:
            chunk = self.usage_chunk or {"id": "", "object": "chat.completion.chunk", "created": int(time.time()),
                                         "model": self.model, "choices": [], "usage": self.usage or {}}
            chunk.update(id=self.own_id.decode(), usage={**(chunk.get("usage") or {}), **usage_body(ended)})
            out = b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        return out + b"data: [DONE]\n\n"


def text_or_empty(value) -> str:
    """A field of an upstream's answer that should be a text (a chunk's content, a completion's id or model), or
    "" when it is not."""
    return value if isinstance(value, str) else ""
