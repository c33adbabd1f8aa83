"""Talking to an MCP server through the official `mcp` SDK's client (its transports and ClientSession; never a
protocol of our own): a session over Streamable HTTP or the older HTTP+SSE, whose every HTTP request goes through
core.outbound's checked transport (public destinations only, checked again at each connection: DNS rebinding), or
over stdio (a process the operator declared: tools.declared); the discovery of a server's tools, and a tool's call
on a kept session (tools.mcp_pool). Async: sync code runs these on the pool's loop, `mcp_pool().call(...)`."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import anyio
import httpx
import pydantic
from anyio.streams.memory import MemoryObjectReceiveStream
from django.conf import settings

from core.db import json_storable, text_storable
from core.log_filters import validation_kinds
from core.outbound import CheckedAsyncTransport, DestinationRefused, DestinationUnresolved
from core.tracing import outbound_hooks_async
from engine.redaction import secret_forms, secrets_scrub
from tools.mcp_answers import LAST_EVENT_ID, AnswerRefused, AnswersBounded
from tools.mcp_pool import STDIO, Endpoint, TransportFailed, mcp_pool

if TYPE_CHECKING:
    from mcp import ClientSession, types

# The `mcp` SDK (a second of imports: its server side too) is imported where a server is reached, so a process
# that never calls a tool (a command, a worker, a server's start) does not load it.

logger = logging.getLogger(__name__)
MAX_TOOLS = 500  # per server: a server listing more is cut here, and last_error says how many were left out
MAX_PAGES = 50
MAX_DESCRIPTION_CHARS = 2000
# A tool's input schema, as compact JSON in UTF-8: one past it (thousands of properties, megabytes of schema) is left
# out of its server's list, not stored, listed and offered to every model it is allowed to (tools.services._offerable).
MAX_SCHEMA_BYTES = 65_536
ERROR_CHARS = 500
SSE_READ_TIMEOUT_S = 300  # how long the server's stream of messages may stay quiet (the SDK's default)


class ProcessEnded(Exception):
    """A stdio server's process ended its output (it exited, or was killed): nothing more can come from it."""


class AnswerStreamEnded(Exception):
    """A Streamable HTTP answer's stream ended (cleanly: a proxy may end it so) before its answer came."""


class McpUnreachable(Exception):
    """The server could not be asked (refused destination, connection, HTTP status, MCP error, timeout, malformed
    answer). The message says why, without the request's header values; `refused` is true when the outbound
    policy refused the destination; `status` is the HTTP status the server answered, if that was why; `timed_out`
    when no answer came in time."""

    def __init__(self, message: str, *, refused: bool = False, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.status = cause.response.status_code if isinstance(cause, httpx.HTTPStatusError) else None
        self.timed_out = isinstance(cause, (TimeoutError, httpx.TimeoutException))  # no answer within the limit


def checked_http_client(headers: dict[str, str] | None = None, timeout: httpx.Timeout | None = None,
                        auth: httpx.Auth | None = None, *, answer_lost: AnswerLost | None = None
                        ) -> httpx.AsyncClient:
    """An httpx client for MCP transports (the SDK's McpHttpClientFactory signature) that sends only to checked
    destinations and uses no proxy or .netrc of the environment, and keeps its connections from call to call
    (ConnectionKeeping: `answer_lost` is told of an answer's stream that broke), and reads at most
    CHATTER_MCP_MAX_ANSWER_BYTES of an answer, asked for unencoded (tools.mcp_answers); with tracing on, its requests
    carry the trace's context (traceparent: core.tracing)."""
    bounded = AnswersBounded(CheckedAsyncTransport(limits=LIMITS), max_bytes=settings.CHATTER_MCP_MAX_ANSWER_BYTES)
    client = httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth,
                               transport=ConnectionKeeping(bounded, answer_lost=answer_lost),
                               trust_env=False, follow_redirects=False, event_hooks=outbound_hooks_async())
    client.headers["Accept-Encoding"] = "identity"  # (whatever `headers` said: a compressed answer is refused)
    return client


# Told of the failure that broke an answer's stream for good (tools.mcp_pool ends the call waiting on it).
AnswerLost = Callable[[Exception], Awaitable[None]]


class ConnectionKeeping(httpx.AsyncBaseTransport):
    """Keeps the connection of a POST whose answer is an SSE stream for the next request. The SDK reads a call's
    answer from that stream and closes the response as soon as the answer is in, a moment before the server ends
    the stream, so httpx would close the connection and every call would open a new one (bench/RESULTS.md, B11).
    Here closing such a response first reads the rest of the stream, at most DRAIN_BYTES within DRAIN_S (the
    server ends it right after the answer; the caller has its answer already), so the connection can be reused.

    Such a stream that breaks before its answer (the server died, the connection dropped), or ends before it
    (ReadToEndOnClose: AnswerStreamEnded), is resumed by the SDK only when its events had ids (a GET with
    Last-Event-ID); otherwise the SDK drops it, and the request would wait for its timeout. So a broken stream
    closed with no resumption answered since it broke tells `answer_lost`: nothing can bring its answer any more."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, answer_lost: AnswerLost | None = None) -> None:
        self._inner = inner
        self._answer_lost = answer_lost
        self.resumptions = 0  # the GETs with a Last-Event-ID that the server answered

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "GET" and LAST_EVENT_ID in request.headers:
            self.resumptions += 1
        if request.method != "POST" or not response.headers.get("content-type", "").startswith("text/event-stream"):
            return response
        return httpx.Response(status_code=response.status_code, headers=response.headers,
                              stream=ReadToEndOnClose(response.stream, self), extensions=response.extensions)

    async def stream_broken(self, failure: Exception, *, resumptions: int) -> None:
        """A stream broke with `failure` when `resumptions` had been answered, and is closed now."""
        if self._answer_lost is not None and self.resumptions == resumptions:
            await self._answer_lost(failure)

    async def aclose(self) -> None:
        await self._inner.aclose()


DRAIN_S = 1.0
DRAIN_BYTES = 64 * 1024
# An idle connection is dropped after 1 s, before the server's own idle timeout closes it (uvicorn's is 5 s,
# gunicorn's 2 s): a request sent as the server closes its connection would fail. A run's calls of one turn, and of
# quick turns, share a connection.
LIMITS = httpx.Limits(keepalive_expiry=1.0)


class ReadToEndOnClose(httpx.AsyncByteStream):
    """A response's stream that, closed before its end, reads on to the end (within DRAIN_S and DRAIN_BYTES)
    before it closes, so its connection goes back to the pool. One iterator over the stream serves the reader
    and the close: the reader's may be dropped (and finalized) before the close, which must not end the stream.
    The reader (the SDK) stops reading once the answer is in, so a stream whose end it reaches ended before its
    answer: that breaks it (AnswerStreamEnded), as a dropped connection would."""

    def __init__(self, stream: httpx.AsyncByteStream, transport: ConnectionKeeping | None = None) -> None:
        self._stream = stream
        self._chunks = None
        self._transport = transport
        self._broken: tuple[Exception, int] | None = None  # what broke it as it was read, and the resumptions then

    def _iterator(self):
        if self._chunks is None:
            self._chunks = aiter(self._stream)
        return self._chunks

    async def __aiter__(self):
        chunks = self._iterator()
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                failure = AnswerStreamEnded("its answer's stream ended before the answer")
            except Exception as exc:
                failure = exc
            else:
                yield chunk
                continue
            if self._transport is not None:
                self._broken = (failure, self._transport.resumptions)
            raise failure

    async def aclose(self) -> None:
        try:
            with anyio.move_on_after(DRAIN_S):
                chunks, read = self._iterator(), 0
                while read <= DRAIN_BYTES:
                    read += len(await anext(chunks))
        except StopAsyncIteration:
            pass  # the end: the connection is reusable
        except Exception:  # noqa: BLE001 - the answer is in; a stream that fails now only costs its connection
            pass
        finally:
            await self._stream.aclose()
        if self._broken is not None:
            failure, resumptions = self._broken
            await self._transport.stream_broken(failure, resumptions=resumptions)


class TransportFailures:
    """What the transport could not read (malformed JSON, a broken stream), which the SDK hands to the session, not
    to the request waiting for the answer, and an answer's stream that broke for good (ConnectionKeeping: the
    server died, its connection dropped), which nothing tells the request: the first one cancels the work (`scope`)
    and is kept to say why; `lost` when it was a lost answer (the server could not be reached, rather than read)."""

    def __init__(self) -> None:
        self.first: Exception | None = None
        self.lost = False
        self.scope = anyio.CancelScope()

    async def message_handler(self, message) -> None:
        if isinstance(message, Exception) and self.first is None:
            self.first = message
            self.scope.cancel()

    async def answer_lost(self, failure: Exception) -> None:
        if self.first is None:
            self.first, self.lost = failure, True
            self.scope.cancel()

    def described(self, timeout_s: float) -> str:
        return _unread_described(self.first, timeout_s, unread=not self.lost)


def _unread_described(failure: BaseException, timeout_s: float, *, unread: bool) -> str:
    """Why a request failed with `failure`, which the transport handed the session (`unread`) or which ended it.
    A connection that failed (the server died, the HTTP+SSE transport's stream broke) is said as such: nothing
    was there to read."""
    why = _describe(failure, timeout_s)
    if unread and not isinstance(failure, (httpx.TransportError, AnswerRefused)):
        return f"the server's answer could not be read ({why})"
    return why


@asynccontextmanager
async def mcp_session(endpoint: Endpoint, *, message_handler, answer_lost: AnswerLost | None = None,
                      timeout_s: float | None = None) -> AsyncIterator[ClientSession]:
    """An initialized ClientSession with the server at `endpoint`, closed on exit. Each request waits at most
    `timeout_s` (CHATTER_MCP_TIMEOUT_S by default); callers bound a whole exchange themselves. Over Streamable
    HTTP, `answer_lost` is told of an answer's stream that broke for good (ConnectionKeeping); over stdio, of the
    process's output that ended (ProcessEnded: the process exited or was killed)."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.sse import sse_client
    from mcp.client.stdio import get_default_environment, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    timeout_s = timeout_s or settings.CHATTER_MCP_TIMEOUT_S
    options = {"read_timeout_seconds": timedelta(seconds=timeout_s), "message_handler": message_handler}
    if endpoint.transport == STDIO:
        params = StdioServerParameters(command=endpoint.command, args=list(endpoint.args),
                                       env={**get_default_environment(), **dict(endpoint.env)})
        with errors_logged(endpoint) as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    output_watched(read, answer_lost) as read, ClientSession(read, write, **options) as session:
                await session.initialize()
                yield session
        return
    if endpoint.transport == "sse":
        async with sse_client(endpoint.url, headers=endpoint.header_dict, timeout=timeout_s,
                              httpx_client_factory=checked_http_client) as (read, write):
            async with ClientSession(read, write, **options) as session:
                await session.initialize()
                yield session
        return
    # The SDK's recommended timeouts: a request's own, and a long read for the server's stream of messages.
    timeout = httpx.Timeout(timeout_s, read=max(timeout_s, SSE_READ_TIMEOUT_S))
    async with checked_http_client(headers=endpoint.header_dict, timeout=timeout, answer_lost=answer_lost) as http, \
            streamable_http_client(endpoint.url, http_client=http) as (read, write, _):
        async with ClientSession(read, write, **options) as session:
            await session.initialize()
            yield session


@contextmanager
def errors_logged(endpoint: Endpoint) -> Iterator[TextIO]:
    """Where a stdio server's process writes its error output (what it prints for its operator): a pipe whose lines
    this log gets (`tools.mcp_client`, WARNING), each with the server's id, its headers' and environment's values
    scrubbed from it (a server that prints its own token). The SDK's default writes it to this process's stderr
    as it is. The pipe's reader ends once the process and the session have both closed it."""
    forms = secret_forms(tuple(endpoint.secrets.values()))
    read_end, write_end = os.pipe()

    def relay() -> None:
        with os.fdopen(read_end, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                logger.warning("MCP server %s (%s) said: %s", endpoint.server_id, os.path.basename(endpoint.command),
                               secrets_scrub(line.rstrip("\n"), forms))

    threading.Thread(target=relay, name="chatter-mcp-errors", daemon=True).start()
    with os.fdopen(write_end, "w") as errlog:
        yield errlog


@asynccontextmanager
async def output_watched(read: MemoryObjectReceiveStream, answer_lost: AnswerLost | None
                         ) -> AsyncIterator[MemoryObjectReceiveStream]:
    """The messages of a stdio server's process (`read`), as they come, telling `answer_lost` once they end: the
    process exited or was killed. The SDK would answer a request waiting then with an MCP error ("Connection
    closed"), as if the server had, and nothing would tell a kept session, whose next call would fail too; told
    first, the request fails as one to a server that cannot be reached, and the session is closed."""
    relay, relayed = anyio.create_memory_object_stream(0)

    async def forward() -> None:
        async with relay:
            try:
                async for message in read:
                    await relay.send(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the session is closing
            if answer_lost is not None:
                await answer_lost(ProcessEnded("its process's output ended"))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(forward)
        try:
            yield relayed
        finally:
            tasks.cancel_scope.cancel()


@dataclass(frozen=True)
class ToolList:
    """What a server listed: its first MAX_TOOLS tools, [{"name", "description", "input_schema"}]; how many more
    the pages read listed (`cut`), and whether pages were left unread (`unread`: past MAX_TOOLS or MAX_PAGES)."""
    tools: list[dict]
    cut: int = 0
    unread: bool = False


async def mcp_tools_discover(endpoint: Endpoint, *, timeout_s: float) -> ToolList:
    """The server's tools (every page, at most MAX_TOOLS), or McpUnreachable saying why not, on a session of its
    own. The whole exchange takes at most `timeout_s`; a server
    that dies (or whose connection drops) mid-exchange fails it as soon as its answer is lost (TransportFailures)."""
    headers = endpoint.secrets
    failures = TransportFailures()
    try:
        with anyio.fail_after(timeout_s), failures.scope:
            async with mcp_session(endpoint, timeout_s=timeout_s, message_handler=failures.message_handler,
                                   answer_lost=failures.answer_lost) as session:
                return await _all_tools(session)
    except BaseException as exc:  # noqa: BLE001 - the SDK's transports raise groups of whatever failed
        cause = _cause(exc)
        if cause is None:
            raise
        raise McpUnreachable(headers_scrubbed(_describe(cause, timeout_s), headers),
                             refused=isinstance(cause, DestinationRefused), cause=cause) from None
    raise McpUnreachable(headers_scrubbed(failures.described(timeout_s), headers))


@dataclass(frozen=True)
class ToolResult:
    """What one call of a tool gave: its text (for the model), or the error (`ok` false: the tool answered an
    error, or the server could not be asked); `truncated` when the text was cut at the size cap."""
    ok: bool
    text: str
    error: str = ""
    truncated: bool = False


async def mcp_tool_call(endpoint: Endpoint, *, tool: str, arguments: dict, timeout_s: float,
                        max_result_bytes: int) -> ToolResult:
    """Call `tool` with `arguments` on a kept session of the server (tools.mcp_pool: run this on the pool's loop),
    the whole exchange within `timeout_s`. A tool error (isError), an MCP error or a timeout: a ToolResult that is
    not ok, saying why; a server that could not be asked (down, refused, an HTTP error status, an answer that
    cannot be read) raises McpUnreachable (the caller marks it). The text is cut at `max_result_bytes` (UTF-8) with
    a note."""
    headers = endpoint.secrets
    try:
        result = await mcp_pool().call_tool(endpoint, tool, arguments, timeout_s=timeout_s)
    except TransportFailed as failed:
        cause = _cause(failed.cause) or failed.cause
        why = _unread_described(cause, timeout_s, unread=failed.unread)
        raise McpUnreachable(headers_scrubbed(why, headers), refused=isinstance(cause, DestinationRefused),
                             cause=cause) from None
    except BaseException as exc:  # noqa: BLE001 - the SDK's transports raise groups of whatever failed
        cause = _cause(exc)
        if cause is None:
            raise
        from mcp import McpError

        if isinstance(cause, (McpError, TimeoutError)):  # an error or a slow answer of this call, not the server's
            return ToolResult(ok=False, text="", error=headers_scrubbed(_describe(cause, timeout_s), headers))
        raise McpUnreachable(headers_scrubbed(_describe(cause, timeout_s), headers),
                             refused=isinstance(cause, DestinationRefused), cause=cause) from None
    text = headers_scrubbed(_result_text(result), headers)  # a tool may echo the credential it was sent
    capped, truncated = result_capped(text, max_result_bytes)
    if result.isError:
        return ToolResult(ok=False, text="", error=capped or "the tool failed", truncated=truncated)
    return ToolResult(ok=True, text=capped, truncated=truncated)


def _result_text(result: types.CallToolResult) -> str:
    """The result as text for a model: its text blocks; other blocks named; the structured content when there is
    no text. Text a row can hold (core.db.text_storable: a NUL from the server is U+FFFD)."""
    from mcp import types

    parts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource) and isinstance(block.resource, types.TextResourceContents):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{block.type}{': ' + block.mimeType if getattr(block, 'mimeType', None) else ''}]")
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return text_storable("\n".join(parts))


def result_capped(text: str, max_bytes: int) -> tuple[str, bool]:
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text, False
    kept = encoded[:max_bytes].decode(errors="ignore")
    return f"{kept}\n[truncated: the result was {len(encoded)} bytes, only the first {max_bytes} are kept]", True


async def _all_tools(session: ClientSession) -> ToolList:
    tools, cut, cursor = [], 0, None
    for _ in range(MAX_PAGES):
        page = await session.list_tools(cursor=cursor)
        room = MAX_TOOLS - len(tools)
        cut += max(0, len(page.tools) - room)
        # What the server says is kept as rows can hold it (core.db: a NUL is U+FFFD).
        tools += [{"name": text_storable(tool.name),
                   "description": text_storable((tool.description or "")[:MAX_DESCRIPTION_CHARS]),
                   "input_schema": json_storable(tool.inputSchema or {"type": "object"})} for tool in page.tools[:room]]
        cursor = page.nextCursor
        if not cursor or len(tools) >= MAX_TOOLS:
            break
    return ToolList(tools=tools, cut=cut, unread=bool(cursor))


def _cause(exc: BaseException) -> BaseException | None:
    """The first failure inside `exc` (which may be an exception group, nested), not a cancellation; None for
    what must go on up (KeyboardInterrupt, SystemExit, a cancellation of the caller)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _cause(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, (KeyboardInterrupt, SystemExit, anyio.get_cancelled_exc_class())):
        return None
    return exc


def _describe(exc: BaseException, timeout_s: float) -> str:
    """Why a request failed, as text a row can hold (the server's own words may carry a NUL)."""
    return text_storable(_why(exc, timeout_s))


def _why(exc: BaseException, timeout_s: float) -> str:
    from mcp import McpError

    if isinstance(exc, DestinationRefused):
        return f"refused: {exc}"
    if isinstance(exc, DestinationUnresolved):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the server answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, httpx.HTTPError):
        return f"could not reach the server ({type(exc).__name__}: {exc})"[:ERROR_CHARS]
    if isinstance(exc, (ProcessEnded, AnswerStreamEnded)):
        return f"could not reach the server ({exc})"
    if isinstance(exc, AnswerRefused):
        return str(exc)
    if isinstance(exc, (anyio.BrokenResourceError, anyio.ClosedResourceError)):  # the transport's streams are gone
        return f"could not reach the server ({type(exc).__name__}{f': {exc}' if str(exc) else ''})"[:ERROR_CHARS]
    if isinstance(exc, McpError):
        return f"MCP error {exc.error.code}: {exc.error.message}"[:ERROR_CHARS]
    if isinstance(exc, pydantic.ValidationError):  # what the server sent, not read: said by kind, never quoted
        return f"not a message of the MCP protocol ({validation_kinds(exc)})"[:ERROR_CHARS]
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def headers_scrubbed(text: str, headers: dict[str, str]) -> str:
    """`text` without the values of a server's headers (its credentials) and environment, which an error or a tool
    may quote, in any of their forms (engine.redaction: a Bearer token without its scheme, URL-encoded, ...). A
    value shorter than MIN_SECRET_LENGTH (a tenant's number, a flag) is no secret: it would match ordinary text."""
    return secrets_scrub(text, secret_forms(tuple(headers.values())))
