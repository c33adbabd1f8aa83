"""The HTTP client of every openai call of a process, which copies the usage objects a server sends off the response
as it passes (providers.RawUsageReports, `usage_copied_into`), through the SDK's documented `http_client` and
httpx's transport interface. Imported when an openai model is made: the SDK's HTTP library (httpx2) takes a tenth of
a second to import, which a process that never calls openai does not pay.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import httpx2

from engine.deadlines import call_time_left
from engine.provider_failures import retry_after_s
from engine.providers import RawUsageReports, usage_reports_current
from engine.settings import settings

_ENCODING_HEADERS = {"content-encoding", "content-length"}
_DONE_LINE = b"data: [DONE]"
_DRAIN_LIMIT = 64 * 1024  # bytes read after a stream's end before its connection is given up


class UsageCopyingStream(httpx2.SyncByteStream):
    """A streamed response body, passed on (decoded) line by line, as its reports read it, while its usage objects
    are copied out."""

    def __init__(self, response: httpx2.Response, reports: RawUsageReports) -> None:
        self.response = response
        self.reports = reports
        self.chunks: Iterator[bytes] | None = None
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        pending = b""
        self.chunks = self.response.iter_bytes()
        for data in self.chunks:
            *lines, pending = (pending + data).split(b"\n")
            if lines:
                self.done = self.done or any(line.startswith(_DONE_LINE) for line in lines)
                yield b"".join(self.reports.read_line(line) + b"\n" for line in lines)
        if pending:
            yield self.reports.read_line(pending)

    def close(self) -> None:
        # The SDK stops reading at the stream's last event; the few bytes after it (the chunked body's end) are read
        # here, so that the connection goes back to the pool instead of being closed (one upstream connection per
        # call otherwise). A stream cut short, or one going on past its end, is closed as it is.
        if self.done and self.chunks is not None:
            left = _DRAIN_LIMIT
            for data in self.chunks:
                left -= len(data)
                if left < 0:
                    break
        self.response.close()


class UsageCopyingTransport(httpx2.BaseTransport):
    """Sends each request through the shared client and copies the usage out of a streamed reply into the calling
    context's reports, if any. A call with a deadline (engine.deadlines) has each of its requests wait at most what is
    left of it, and sends none past it."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        left = call_time_left()
        if left is not None:
            if left <= 0:
                raise _past_deadline(request)
            request.extensions["timeout"] = {name: left if wait is None else min(wait, left) for name, wait in (
                request.extensions.get("timeout") or dict.fromkeys(("connect", "read", "write", "pool"))).items()}
        try:
            # The calling client follows redirects itself.
            response = shared_http_client().send(request, stream=True, follow_redirects=False)
        except httpx2.TimeoutException as exc:
            if left is not None and call_time_left() <= 0:
                raise _past_deadline(request) from exc
            raise
        waits = retry_after_s(response.headers) or 0
        if left is not None and response.status_code >= 400 and waits >= call_time_left():
            # A retry would begin past the deadline (the client library waits out the upstream's Retry-After first).
            response.headers["x-should-retry"] = "false"
        reports = usage_reports_current()
        content_type = response.headers.get("content-type", "").lower()
        if reports is None or not content_type.startswith(("text/event-stream", "application/json")):
            return response
        # The body is passed on decoded.
        headers = [(k, v) for k, v in response.headers.multi_items() if k not in _ENCODING_HEADERS]
        if content_type.startswith("application/json"):  # a reply sent whole
            try:
                body = response.read()
            finally:
                response.close()
            return httpx2.Response(status_code=response.status_code, headers=headers,
                                   content=reports.read_body(body, status=response.status_code),
                                   extensions=response.extensions)
        return httpx2.Response(status_code=response.status_code, headers=headers,
                               stream=UsageCopyingStream(response, reports), extensions=response.extensions)


def _past_deadline(request: httpx2.Request) -> Exception:
    """The error of a request its call's deadline ended (or that would begin past it): the SDK's own timeout, which it
    passes on without retrying (it retries the transport's errors)."""
    import openai

    return openai.APITimeoutError(request=request)


@functools.cache
def shared_http_client() -> httpx2.Client:
    """One client, so one pool of kept-alive connections, for every openai call of the process: the SDK's defaults,
    and proxies and certificates from the environment as usual; and the application's hooks (settings.outbound_hooks:
    Chatter's put the trace's context, traceparent, on each request when tracing is on)."""
    import openai

    return openai.DefaultHttpxClient(event_hooks=settings.outbound_hooks())


@functools.cache
def usage_copying_http_client() -> httpx2.Client:
    """The client of the openai calls a run makes (chat, embeddings, rerank): held to the call's deadline, if any, and
    copying a chat call's usage into its reports."""
    import openai

    return openai.DefaultHttpxClient(transport=UsageCopyingTransport())


def _forget_clients() -> None:
    # A forked process (django-q2's workers) opens connections of its own: a pooled socket is never shared.
    shared_http_client.cache_clear()
    usage_copying_http_client.cache_clear()


os.register_at_fork(after_in_child=_forget_clients)
