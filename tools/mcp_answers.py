"""How much of an MCP server's answer Chatter reads (docs/tools.md#how-much-of-an-answer-is-read): the SDK's
transports read a JSON answer whole (httpx's `aread`) and an SSE event whole before they parse it, so a server that
answers without end would fill the process's memory before any cap on a tool's result applied. AnswersBounded, a
transport under the httpx client the SDK's transports use (tools.mcp_client.checked_http_client), fails a response's
stream once it passes CHATTER_MCP_MAX_ANSWER_BYTES (AnswerRefused), and the SDK hands that failure to the session
as it hands a broken stream: the request waiting on it fails at once, its connection closed unread.

An answer is a response's whole body (a JSON answer, the SSE stream of one request's answer, its resumption); the
SSE stream a session keeps open (the HTTP+SSE transport's, which carries every answer, and Streamable HTTP's GET
stream) is bounded per event, as it lasts as long as its session. Answers are asked for unencoded
(`Accept-Encoding: identity`): a compressed one's size is only known once it is unpacked, so one sent compressed
anyway is refused."""
from __future__ import annotations

import httpx

# An SSE event ends at an empty line: two line ends in a row, other than the one line end CR LF (the SSE spec's
# lines end with CR LF, LF or CR). A boundary pair is one of these.
EVENT_ENDS = (b"\n\n", b"\r\r", b"\n\r")
UNENCODED = ("", "identity")
LAST_EVENT_ID = "last-event-id"  # the header of a GET that resumes one answer's stream (the SDK's resumption)


class AnswerRefused(Exception):
    """An answer Chatter stopped reading: it passed its limit, or came compressed (its size unknown until read)."""


class AnswersBounded(httpx.AsyncBaseTransport):
    """Each response's stream fails (AnswerRefused) once more than `max_bytes` of it came: of its whole body, or, on
    the stream a session keeps open (a GET that resumes nothing), of any one SSE event."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, max_bytes: int) -> None:
        self._inner = inner
        self.max_bytes = max_bytes

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        per_event = request.method == "GET" and LAST_EVENT_ID not in request.headers
        stream = BoundedStream(response.stream, max_bytes=self.max_bytes, per_event=per_event,
                               refused=None if encoding in UNENCODED else AnswerRefused(
                                   f"the server's answer came compressed ({encoding[:40]}), which Chatter does not "
                                   "ask for: its size is not known until it is unpacked"))
        return httpx.Response(status_code=response.status_code, headers=response.headers, stream=stream,
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedStream(httpx.AsyncByteStream):
    """`stream`'s bytes, failing once more than `max_bytes` came (since the last SSE event's end, `per_event`), or
    at once with `refused`. The bytes past the limit are not read: closing the stream closes its connection."""

    def __init__(self, stream: httpx.AsyncByteStream, *, max_bytes: int, per_event: bool = False,
                 refused: AnswerRefused | None = None) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._per_event = per_event
        self._refused = refused

    async def __aiter__(self):
        if self._refused is not None:
            raise self._refused
        read, last = 0, b""
        async for chunk in self._stream:
            ended = _event_end(last + chunk) if self._per_event else -1
            read = len(last) + len(chunk) - ended if ended >= 0 else read + len(chunk)
            if read > self._max_bytes:
                raise AnswerRefused(f"the server's answer passed {self._max_bytes} bytes "
                                    "(CHATTER_MCP_MAX_ANSWER_BYTES): the rest was not read")
            last = chunk[-1:]
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


def _event_end(data: bytes) -> int:
    """Where the last SSE event in `data` ended (the index past its empty line), or -1."""
    found = max(data.rfind(end) for end in EVENT_ENDS)
    return found + 2 if found >= 0 else -1
