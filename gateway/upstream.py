"""The pass-through's connections to its upstreams (gateway.passthrough). A call answered whole is made on the
request's own thread (`upstream_post_whole`), through the standard library's http.client on an idle kept-alive
HTTP/1.1 connection to the upstream (the process keeps them per upstream, as many as calls at once, closing one idle
past a minute at the next call): no hand-off to another thread and back, the request's thread waits for the answer
in its socket. A stream goes through one aiohttp session per upstream (its pool of kept-alive connections), on an
event loop of the gateway's own, in a thread a process starts on its first streamed call; the stream is relayed from
there. A forked child (as django-q2's workers are) drops the connections and the loop it inherited and makes its
own.

Why the whole call on the request's thread: in B8 at 8 clients in one process, the upstream loop's thread spent
0.54-0.65 ms of CPU per call, against about 0.13 for the whole call through http.client (bench/RESULTS.md, B8).

Why a loop of its own: a call's upstream I/O never depends on which loop, if any, served its request (a server's, or
the short-lived one `async_to_sync` makes under a WSGI or test client), so the sessions live as long as the process.
Why aiohttp: a call through it costs about a quarter of the CPU of one through httpx.AsyncClient on this machine
(0.3-0.6 against 1.5-2.1 ms, bench/RESULTS.md, B8: bench/b8_clients.py), on the gateway's hot path; it speaks
HTTP/1.1 only (LiteLLM's proxy calls OpenAI through it too).

`upstream_call(coroutine)`: from the request's thread, waits for the coroutine's result. `upstream_submit(coroutine)`:
from any thread, its future (a stream's relay, read from the request's thread on and taken by the server's loop).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import http.client
import os
import select
import ssl
import threading
import time
import urllib.request
from urllib.parse import unquote, urlsplit

import aiohttp
from django.conf import settings

_loop: asyncio.AbstractEventLoop | None = None
_sessions: dict[str, aiohttp.ClientSession] = {}  # upstream URL → its session, on _loop only
_proxy_headers: dict[str, dict | None] = {}  # upstream URL → its proxy's credentials
_lock = threading.Lock()
_kept: dict[str, list[tuple]] = {}  # upstream URL → its idle connections, oldest first (upstream_post_whole)
KEEP_IDLE_S = 60  # how long a connection to an upstream is kept idle (a stream's session's and a whole call's)
_UNSENT = (ConnectionResetError, BrokenPipeError)  # a request's sending refused: the peer had closed


def _upstream_loop() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None:
        with _lock:
            if _loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="gateway-upstream", daemon=True).start()
                atexit.register(_close, loop)
                _loop = loop
    return _loop


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """At the process's exit: its sessions closed (their connections too), the loop stopped."""
    async def close_sessions() -> None:
        for session in list(_sessions.values()):
            await session.close()

    if loop is _loop and loop.is_running():
        asyncio.run_coroutine_threadsafe(close_sessions(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)


def _forget() -> None:
    global _loop, _sessions, _proxy_headers, _lock, _kept
    _loop, _sessions, _proxy_headers, _lock, _kept = None, {}, {}, threading.Lock(), {}


os.register_at_fork(after_in_child=_forget)


def upstream_session(url: str) -> aiohttp.ClientSession:
    """The session of `url`'s upstream (called on the upstream loop): no limit on connections at once; an idle one
    kept a minute; through the proxy the environment names for it, as the openai SDK's client would be."""
    session = _sessions.get(url)
    if session is None:
        proxy, _proxy_headers[url] = _environment_proxy(url)
        session = _sessions[url] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEP_IDLE_S), proxy=proxy)
    return session


def upstream_post(url: str, *, data: bytes, headers: dict, timeout: aiohttp.ClientTimeout):
    """A POST to `url` through its session (on the upstream loop), with the credentials of its proxy if it has one:
    as `session.post(...)`, a context manager or an awaitable of the response. (aiohttp sends `proxy_headers` with
    the CONNECT of an https upstream; a plain http request goes to the proxy as it is, its credentials with it.)"""
    session = upstream_session(url)
    credentials = _proxy_headers[url]
    if credentials and not url.startswith("https:"):
        headers, credentials = {**headers, **credentials}, None
    return session.post(url, data=data, headers=headers, timeout=timeout, proxy_headers=credentials)


def _environment_proxy(url: str) -> tuple[str | None, dict | None]:
    """The proxy the environment names for `url` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, as urllib reads them), and the
    header of its credentials, taken out of its URL; (None, None) when there is none or `url`'s host is exempt.
    Read once per session: aiohttp's `trust_env` reads the environment (and ~/.netrc) again on every request, each
    time in a thread of the loop's executor: about 5% of a server process's CPU in B8 at 8 clients (py-spy)."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None, None
    proxied = urlsplit(proxy)
    if proxied.username is None:
        return proxy, None
    netloc = proxied.netloc.rpartition("@")[2]
    return proxied._replace(netloc=netloc).geturl(), {"Proxy-Authorization": aiohttp.encode_basic_auth(
        unquote(proxied.username), unquote(proxied.password or ""))}


def upstream_post_whole(url: str, *, data: bytes, headers: dict) -> tuple[int, http.client.HTTPMessage, bytes]:
    """POST `data` to `url` from the calling thread, on an idle kept-alive connection to the upstream (or a new one:
    as many as calls at once; through the proxy the environment names, as upstream_session's), and read the whole
    answer: (status, headers, body). Times out as upstream_timeout says.

    A request is sent once. An idle connection the upstream closed meanwhile (its socket readable: the peer's end, or
    bytes nobody asked for) is dropped before anything is sent on it; one whose sending is refused (the peer closed it
    just then: nothing of the request arrived whole) is replaced once. Once the request has gone, any failure is
    raised (OSError, http.client's errors), an upstream that hangs up before answering too: it may have taken the
    call, and sending it again could make it twice (as httpx and urllib3 do with a POST)."""
    idle = _kept.setdefault(url, [])
    kept = _idle_usable(idle)
    while True:
        connection, target, extra = kept or _connected(url)
        try:
            connection.request("POST", target, body=data, headers={**headers, **extra})
        except _UNSENT:
            connection.close()
            if kept is None:
                raise
            kept = None  # once, on a new connection
            continue
        except BaseException:
            connection.close()
            raise
        try:
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()
            raise
        if not response.will_close:
            idle.append((connection, target, extra, time.monotonic()))
        return response.status, response.headers, body


def _idle_usable(idle: list[tuple]) -> tuple[http.client.HTTPConnection, str, dict] | None:
    """The most recently used of `idle`'s connections that can carry a request, taken from it; those the upstream
    closed meanwhile are closed here, and those idle past KEEP_IDLE_S (the least recently used: after a burst of
    calls at once, more than the calls since need). None: no such connection (or another thread took the last one
    first)."""
    expired = time.monotonic() - KEEP_IDLE_S
    while True:
        try:
            if idle[0][3] >= expired:
                break
            oldest = idle.pop(0)
        except IndexError:  # (none left: another thread took the last one first)
            break
        if oldest[3] >= expired:  # (another thread took the expired one first: this one is kept, at the top)
            idle.append(oldest)
            break
        oldest[0].close()
    while True:
        try:
            kept = idle.pop()
        except IndexError:
            return None
        sock = kept[0].sock
        try:
            poller = select.poll()  # (not select(): no bound on the descriptor's number)
            poller.register(sock, select.POLLIN)
            readable = bool(poller.poll(0))
        except (OSError, ValueError, TypeError):  # (its socket closed under it)
            readable = True
        if not readable:
            return kept[:3]
        kept[0].close()


def _connected(url: str) -> tuple[http.client.HTTPConnection, str, dict]:
    """A new connection to `url`'s upstream, or to the proxy the environment names for it (an https upstream
    through a CONNECT tunnel with the proxy's credentials; an http one asked for by its whole URL, the credentials
    with each request), its socket's timeouts as upstream_timeout's; with what a request on it names and adds."""
    parts = urlsplit(url)
    proxy, credentials = _environment_proxy(url)
    timeout = settings.CHATTER_PROVIDER_TIMEOUT_S
    address = urlsplit(proxy) if proxy else parts
    target, extra = parts.path + (f"?{parts.query}" if parts.query else ""), {}
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(address.hostname, address.port, timeout=min(10.0, timeout),
                                                 context=ssl.create_default_context())
        if proxy:
            connection.set_tunnel(parts.hostname, parts.port, headers=credentials)
    else:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=min(10.0, timeout))
        if proxy:
            target, extra = url, credentials or {}
    connection.connect()
    connection.sock.settimeout(timeout)
    return connection, target, extra


class StreamedBody:
    """A streamed answer's body, read on the upstream loop from the moment the answer opens (made there, as it opens),
    its pieces kept until the relay takes them, then the failure that ended it, if any. aiohttp drops what it holds of
    a body unread once the connection fails (each of its reads raises the failure first): read only once the relay
    was under way, after the answer had gone to the request's thread and back, the pieces an upstream sent at once
    just before it hung up were lost, and the client got the error alone."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._pieces: asyncio.Queue = asyncio.Queue()
        try:
            self._pieces.put_nowait(response.content.read_nowait())  # what came with the answer's head
        except Exception as exc:  # noqa: BLE001 - (already failed): the relay's to report
            self._pieces.put_nowait(exc)
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for piece in self.response.content.iter_any():
                self._pieces.put_nowait(piece)
        except Exception as exc:  # noqa: BLE001 - the body's end, for the relay to report
            self._pieces.put_nowait(exc)
        self._pieces.put_nowait(None)

    async def __aiter__(self):
        """The body's pieces, as they came; then its failure raised (on the upstream loop)."""
        while (piece := await self._pieces.get()) is not None:
            if isinstance(piece, Exception):
                raise piece
            if piece:
                yield piece

    def release(self) -> None:
        """Done with it: its reading stopped, its connection back to the pool (closed when not read to its end)."""
        self._reading.cancel()
        self.response.release()


def upstream_timeout() -> aiohttp.ClientTimeout:
    """How long the upstream may take to connect, and then between any two reads (a stream's chunks too)."""
    timeout = settings.CHATTER_PROVIDER_TIMEOUT_S
    return aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout), sock_read=timeout)


def upstream_call(coroutine):
    """Run `coroutine` on the upstream loop and wait for its result (or exception), from a thread that is not it."""
    return asyncio.run_coroutine_threadsafe(coroutine, _upstream_loop()).result()


def upstream_submit(coroutine) -> concurrent.futures.Future:
    """`coroutine` run on the upstream loop from now on, from any thread: its future."""
    return asyncio.run_coroutine_threadsafe(coroutine, _upstream_loop())
