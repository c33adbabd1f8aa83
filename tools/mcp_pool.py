"""Kept MCP sessions (docs/tools.md#kept-sessions): one event loop per process (a daemon thread running anyio on
asyncio) holds initialized ClientSessions of the official SDK, keyed by their Endpoint (URL, transport and headers,
or a stdio server's command), so calls reuse a session instead of opening one each time.

A call checks a session out for itself and back in once the server answered; a session whose transport failed,
whose call timed out or was cut short is closed instead. Sync code calls through `mcp_pool().call(fn, ...)` (a
coroutine function run on the pool's loop); async code on another loop through `await mcp_pool().call_async(...)`.
Each hands the coroutine over with asyncio's `run_coroutine_threadsafe`: one hand-off a call (bench/RESULTS.md, B11).
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from django.conf import settings

if TYPE_CHECKING:
    from mcp import ClientSession

MAX_IDLE_PER_ENDPOINT = 8
STDIO = "stdio"
logger = logging.getLogger(__name__)
REAP_EVERY_S = 1.0  # how often idle sessions are looked at
SESSION_GONE = "Session terminated"  # the SDK's error when the server answers 404 to its session id


@dataclass(frozen=True)
class Endpoint:
    """Where and how a server is reached: what a kept session is keyed by. `server_id` names the registry's entry
    (its sessions are forgotten when it changes); headers are the ones a call sends (the credentials in effect)."""
    server_id: str
    transport: str  # streamable_http, sse, stdio
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)

    @property
    def secrets(self) -> dict[str, str]:
        """What a call sends that an answer must not quote back: the headers' values, a stdio server's env's."""
        return {**dict(self.env), **dict(self.headers)}


class TransportFailed(Exception):
    """What the transport could not read or send (malformed JSON, an HTTP error status, a broken stream, a process
    that ended) while a call waited: the SDK hands it to the session, not to the request, so it ends the call."""

    def __init__(self, cause: BaseException, *, unread: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.unread = unread  # an answer (or a message) the transport could not read, rather than its own failure


@dataclass(eq=False)
class _Session:
    endpoint: Endpoint
    session: ClientSession | None = None
    failure: BaseException | None = None
    unread: bool = False  # `failure` is what the transport handed the session (it could not read an answer)
    idle_since: float = field(default_factory=time.monotonic)
    retired: bool = False  # closed when checked in (its server changed)
    calls: int = 0  # how many calls it answered (0: fresh)
    _ready: anyio.Event = field(default_factory=anyio.Event)
    _closing: anyio.Event = field(default_factory=anyio.Event)
    _call_scope: anyio.CancelScope | None = None
    _hold_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    async def hold(self, opened: Callable[..., AbstractAsyncContextManager[ClientSession]]) -> None:
        """The task that keeps the session open until it is closed (an SDK session is entered and left by one
        task). A failure to open is kept for the call that waits on it."""
        try:
            with self._hold_scope:
                async with opened(self.endpoint, message_handler=self._message,
                                  answer_lost=self._answer_lost) as session:
                    self.session = session
                    self._ready.set()
                    await self._closing.wait()
        except Exception as exc:  # noqa: BLE001 - the SDK's transports raise groups of whatever failed
            self.failure = self.failure or exc
        except BaseExceptionGroup as group:  # noqa: B036 - the same, inside anyio task groups
            self.failure = self.failure or group
        finally:
            self.session = None
            self._ready.set()
            self._cancel_call()

    async def ready(self) -> ClientSession:
        await self._ready.wait()
        if self.session is None:
            raise self._failed()
        return self.session

    async def call_tool(self, tool: str, arguments: dict):
        session = await self.ready()
        with anyio.CancelScope() as scope:
            self._call_scope = scope
            try:
                result = await session.call_tool(tool, arguments)
                self.calls += 1
                return result
            except Exception:
                if self.failure is None:
                    raise
                raise self._failed() from None  # what the request got of the session's end ("Connection closed")
            finally:
                self._call_scope = None
        raise self._failed()

    def _failed(self) -> TransportFailed:
        return TransportFailed(self.failure or RuntimeError("the session closed"), unread=self.unread)

    def close(self) -> None:
        self._closing.set()

    @property
    def open(self) -> bool:
        return self.session is not None

    @property
    def usable(self) -> bool:
        return self.session is not None and self.failure is None and not self._closing.is_set()

    async def _message(self, message) -> None:
        if isinstance(message, Exception):  # the session cannot be trusted after this: it ends, and its call
            if self.failure is None:
                self.failure, self.unread = message, True
            self._cancel_call()
            self._hold_scope.cancel()

    async def _answer_lost(self, failure: Exception) -> None:
        """The stream of an answer (the call's, or the initialization's) broke and will not be resumed, or a stdio
        server's process ended: the server is gone, or its connection; the session ends, and its call, as when its
        transport fails (idle, it is dropped: the next call opens another)."""
        if self.failure is None:
            self.failure = failure
        self._cancel_call()
        self._hold_scope.cancel()

    def _cancel_call(self) -> None:
        if self._call_scope is not None:
            self._call_scope.cancel()


class McpPool:
    """The kept sessions of this process (see the module's doc)."""

    def __init__(self, opened: Callable[..., AbstractAsyncContextManager[ClientSession]]) -> None:
        self._opened = opened
        self._idle: dict[Endpoint, list[_Session]] = defaultdict(list)
        self._sessions: set[_Session] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="mcp-pool", daemon=True)
        self._thread.start()
        started.wait()
        atexit.register(self.shutdown)

    # --- what callers use ---------------------------------------------------------------------------------------
    def call(self, fn: Callable[..., Awaitable[Any]], /, *args, **kwargs) -> Any:
        """Run the coroutine function `fn(*args, **kwargs)` on the pool's loop and wait for it (sync code)."""
        return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop).result()

    async def call_async(self, fn: Callable[..., Awaitable[Any]], /, *args, **kwargs) -> Any:
        """The same from async code on another event loop (a Python graph's); cancelling it cancels the call."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop))

    async def call_tool(self, endpoint: Endpoint, tool: str, arguments: dict, *, timeout_s: float):
        """Call `tool` on a kept session of `endpoint` (on the pool's loop), within `timeout_s`: the SDK's
        CallToolResult, or what the call raised (McpError, TimeoutError, TransportFailed, the transport's own)."""
        from mcp import McpError

        with anyio.fail_after(timeout_s):
            for attempt in range(2):
                # Made again, on a session of its own: another kept one may be as stale (a restarted server
                # dropped them all).
                held = await self._checkout(endpoint, fresh=attempt > 0)
                reused = held.calls > 0
                try:
                    result = await held.call_tool(tool, arguments)
                except McpError as exc:
                    gone = exc.error.message == SESSION_GONE
                    self._checkin(held, keep=not gone)
                    if gone and reused and attempt == 0:
                        continue  # the server dropped the session (it restarted): it never ran this call
                    raise
                except BaseException:
                    self._checkin(held, keep=False)
                    raise
                self._checkin(held, keep=True)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def forget(self, server_id: str) -> None:
        """Close the sessions of a server that changed or is gone (those in use, once their call ends)."""
        self.call(self._forget, str(server_id))

    def kept(self, endpoint: Endpoint) -> int:
        """How many idle sessions of `endpoint` are kept now."""
        return len(self._idle.get(endpoint, ()))

    def close_all(self) -> None:
        """Close every kept session now (those in use, once their call ends), waiting a few seconds at most."""
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=5)

    def shutdown(self) -> None:
        if self._thread.is_alive():
            try:
                self.close_all()
            except Exception:  # noqa: BLE001 - the process is ending: closing politely is a courtesy
                pass

    @property
    def alive(self) -> bool:
        """Its loop still runs (it ends only on a failure of its own: then mcp_pool() starts another)."""
        return self._thread.is_alive()

    def _run(self, started: threading.Event) -> None:
        try:
            anyio.run(self._main, started)
        except BaseException:  # noqa: BLE001 - whatever ended it, the process's next call gets a new pool
            logger.exception("the MCP session pool's loop ended; the next call starts another")
        finally:
            started.set()  # (a loop that could not start lets its creator go on)

    # --- on the pool's loop -------------------------------------------------------------------------------------
    async def _main(self, started: threading.Event) -> None:
        async with anyio.create_task_group() as tasks:  # the sessions' tasks, and the reaper (which never ends)
            self._loop, self._tasks = asyncio.get_running_loop(), tasks
            tasks.start_soon(self._reap)
            started.set()

    async def _checkout(self, endpoint: Endpoint, *, fresh: bool = False) -> _Session:
        """A kept session of `endpoint` that is still usable, or a new one (always, when `fresh`)."""
        idle = [] if fresh else self._idle.get(endpoint, [])
        while idle:
            held = idle.pop()
            if held.usable:
                return held
            self._closed(held)
        held = _Session(endpoint)
        self._sessions.add(held)
        self._tasks.start_soon(held.hold, self._opened)
        return held

    def _checkin(self, held: _Session, *, keep: bool) -> None:
        idle = self._idle[held.endpoint]
        if keep and held.usable and not held.retired and len(idle) < MAX_IDLE_PER_ENDPOINT:
            held.idle_since = time.monotonic()
            idle.append(held)
        else:
            self._closed(held)

    def _closed(self, held: _Session) -> None:
        held.close()
        self._sessions.discard(held)

    async def _forget(self, server_id: str) -> None:
        for held in list(self._sessions):
            if held.endpoint.server_id == server_id:
                held.retired = True
        for endpoint in [each for each in self._idle if each.server_id == server_id]:
            for held in self._idle.pop(endpoint):
                self._closed(held)

    async def _reap(self) -> None:
        while True:
            await anyio.sleep(REAP_EVERY_S)
            idle_s, now = settings.CHATTER_MCP_IDLE_S, time.monotonic()
            for endpoint, idle in list(self._idle.items()):
                for held in [each for each in idle if now - each.idle_since > idle_s or not each.usable]:
                    idle.remove(held)
                    self._closed(held)
                if not idle:
                    self._idle.pop(endpoint, None)

    async def _close_all(self) -> None:
        for held in self._sessions:
            held.retired = True
        closing = [held for idle in self._idle.values() for held in idle]
        for held in closing:
            self._closed(held)
        self._idle.clear()
        with anyio.move_on_after(3):
            while any(held.open for held in closing):
                await anyio.sleep(0.01)


_pool: McpPool | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def mcp_pool() -> McpPool:
    """This process's pool, started on first use."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid() or not _pool.alive:
            from tools.mcp_client import mcp_session

            _pool, _pool_pid = McpPool(mcp_session), os.getpid()
        return _pool


def mcp_pool_forget(server_id) -> None:
    """Close the kept sessions of a server that changed or was deleted (nothing when no pool was started)."""
    if _pool is not None and _pool_pid == os.getpid() and _pool.alive:
        _pool.forget(str(server_id))


def mcp_pool_close_all() -> None:
    """Close every kept session of this process (nothing when no pool was started)."""
    if _pool is not None and _pool_pid == os.getpid() and _pool.alive:
        _pool.close_all()
