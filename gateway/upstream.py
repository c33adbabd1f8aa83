"""The pass-through's connections to its upstreams (gateway.passthrough): one aiohttp session per upstream (its pool
of kept-alive HTTP/1.1 connections), on an event loop of the gateway's own, in a thread a process starts on its
first pass-through call (a forked child, as django-q2's workers are, starts its own and drops what it inherited).

Why a loop of its own: a call's upstream I/O never depends on which loop, if any, served its request (a server's, or
the short-lived one `async_to_sync` makes under a WSGI or test client), so the sessions live as long as the process.
Why aiohttp: a call through it costs about a quarter of the CPU of one through httpx.AsyncClient on this machine
(0.3-0.6 against 1.5-2.1 ms, bench/RESULTS.md, B8: bench/b8_clients.py), on the gateway's hot path; it speaks
HTTP/1.1 only (LiteLLM's proxy calls OpenAI through it too).

`upstream_call(coroutine)`: from the request's thread, waits for the coroutine's result. `upstream_future(coroutine)`:
from another event loop (a stream's relay), an asyncio future of it.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import threading

import aiohttp
from django.conf import settings

_loop: asyncio.AbstractEventLoop | None = None
_sessions: dict[str, aiohttp.ClientSession] = {}  # upstream URL → its session, on _loop only
_lock = threading.Lock()


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
    global _loop, _sessions, _lock
    _loop, _sessions, _lock = None, {}, threading.Lock()


os.register_at_fork(after_in_child=_forget)


def upstream_session(url: str) -> aiohttp.ClientSession:
    """The session of `url`'s upstream (called on the upstream loop): no limit on connections at once; an idle one
    kept a minute; the proxy environment variables honoured, as the openai SDK's client does."""
    session = _sessions.get(url)
    if session is None:
        session = _sessions[url] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60), trust_env=True)
    return session


def upstream_timeout() -> aiohttp.ClientTimeout:
    """How long the upstream may take to connect, and then between any two reads (a stream's chunks too)."""
    timeout = settings.CHATTER_PROVIDER_TIMEOUT_S
    return aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, timeout), sock_read=timeout)


def upstream_call(coroutine):
    """Run `coroutine` on the upstream loop and wait for its result (or exception), from a thread that is not it."""
    return asyncio.run_coroutine_threadsafe(coroutine, _upstream_loop()).result()


def upstream_future(coroutine) -> asyncio.Future:
    """`coroutine` run on the upstream loop, as a future of the calling event loop."""
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, _upstream_loop()))
