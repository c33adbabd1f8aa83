"""A real MCP server for tests: the official SDK's FastMCP (mcp 1.x), served by uvicorn on 127.0.0.1 in a thread.

Only the process boundary is shared with the tests: Chatter reaches it over HTTP exactly as it would reach a team's
tool server. Transports: Streamable HTTP at `/mcp` (`server.url`) and the older HTTP+SSE at `/sse` (`server.sse_url`).
`/malformed` answers every POST with a body that is not JSON (`server.malformed_url`), as a broken server would;
`/redirect` answers every request with a 307 to `/mcp` by another name, `localhost` (`server.redirect_url`): another
origin. `/empty-answer` is `/mcp`, but answers a `tools/call` with a 200 `text/event-stream` that ends at once, empty
(`server.empty_answer_url`), as a proxy that ends a stream early would. `/endless-answer` answers it with an SSE event
that goes on for ENDLESS_BYTES (`server.endless_answer_url`; `/endless-json-answer` a JSON body, `/endless-listing` a
`tools/list` so), as a hostile or broken server might; `endless_sent` is how many bytes it got to send.
`/compressed-answer` answers a `tools/call` with a gzip-compressed JSON body (whatever the request accepts) that
unpacks to COMPRESSED_BYTES. `McpTestServer(build=build_odd_mcp)` serves odd tools instead, `build_many_mcp` too many of them,
`build_twice_listing_mcp` one tool twice, `build_held_listing_mcp`
a listing held until `release()`, `build_nameless_tool_mcp` a tool without a name,
`build_oversized_schema_mcp` tools whose input schemas are too large.

Tools:
- `add(a, b)`: a + b.
- `sleep(seconds)`: waits, then answers "slept" (for timeouts).
- `fail(message)`: raises; the SDK answers a tool error (a result with `isError` true and the message).
- `big(size)`: a text of `size` characters "x" (for result size caps).
- `echo_header(name, wait=0)`: the value of the request's header `name` ("" when absent): which credential a call
  carried (after `wait` seconds, or as soon as the test calls `release()`: a call held while the test acts).

`require_token("…")` makes every request need `Authorization: Bearer …` (others get a 401) until `reset()`.
`slow_down(seconds)` makes every request wait that long first, until `reset()`.
`requests` records each HTTP request's method, path, headers (lower-cased names) and client (address, port: its
connection), in order; `calls` each tool
call, (tool name, arguments).

    with McpTestServer() as server:
        async with streamable_http_client(server.url) as (read, write, _): ...
"""
from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time

import uvicorn
from mcp import types
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

TOOL_NAMES = ("add", "sleep", "fail", "big", "echo_header")


def build_mcp(called, released: threading.Event) -> FastMCP:
    """The server's tools; `called(name, arguments)` notes each call; `released` ends echo_header's waits."""
    # Any Host header: tests reach it by names their fake resolver points at 127.0.0.1 (the SDK's own DNS rebinding
    # guard would accept only 127.0.0.1 and localhost).
    mcp = FastMCP("chatter-test-tools", host="127.0.0.1", log_level="WARNING",
                  transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @mcp.tool(description="Adds two numbers.")
    def add(a: float, b: float) -> float:
        called("add", {"a": a, "b": b})
        return a + b

    @mcp.tool(description="Waits for some seconds, then answers.")
    async def sleep(seconds: float) -> str:
        called("sleep", {"seconds": seconds})
        await asyncio.sleep(seconds)
        return "slept"

    @mcp.tool(description="Always fails with the message given.")
    def fail(message: str = "it failed") -> str:
        called("fail", {"message": message})
        raise RuntimeError(message)

    @mcp.tool(description="Returns a text of `size` characters.")
    def big(size: int) -> str:
        called("big", {"size": size})
        return "x" * size

    @mcp.tool(description="Returns the value of one header of the HTTP request that called it.")
    async def echo_header(name: str, ctx: Context, wait: float = 0) -> str:
        called("echo_header", {"name": name, **({"wait": wait} if wait else {})})
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not released.is_set():
            await asyncio.sleep(0.01)
        return ctx.request_context.request.headers.get(name, "")

    return mcp


LONG_TOOL = "t" + "x" * 99  # a valid MCP tool name (the spec allows 128 characters): too long for a model


def build_odd_mcp(called, released: threading.Event) -> FastMCP:  # (none of its tools waits)
    """A server whose answers are valid MCP but odd for a database or a model: a NUL in a result, in an error and
    in a description, a tool name of 100 characters, a tool name that starts with "_" (`_under`)."""
    mcp = FastMCP("chatter-test-odd", host="127.0.0.1", log_level="WARNING",
                  transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @mcp.tool(description="Answers a text with a NUL in it.")
    def nul() -> str:
        called("nul", {})
        return "a\x00b"

    @mcp.tool(description="Fails with a NUL in its message.")
    def nul_fail() -> str:
        called("nul_fail", {})
        raise RuntimeError("bad\x00error")

    @mcp.tool(description="bad\x00description")
    def nul_described(text: str = "") -> str:
        called("nul_described", {"text": text})
        return "ok"

    @mcp.tool(name=LONG_TOOL, description="A tool with a long name.")
    def long_named() -> str:
        called(LONG_TOOL, {})
        return "long ok"

    @mcp.tool(name="_under", description="A tool whose name starts with an underscore.")
    def under() -> str:
        called("_under", {})
        return "under ok"

    return mcp


MANY_TOOLS = 600


def build_many_mcp(called, released: threading.Event) -> FastMCP:  # (none of its tools is called)
    """A server listing MANY_TOOLS tools, `t000` to `t599`: more than Chatter keeps of one server's list."""
    mcp = FastMCP("chatter-test-many", host="127.0.0.1", log_level="WARNING",
                  transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    def tool_of(number: int):
        def tool() -> str:
            return f"tool {number}"
        return tool

    for number in range(MANY_TOOLS):
        mcp.add_tool(tool_of(number), name=f"t{number:03d}", description=f"Tool {number}.")
    return mcp


def build_twice_listing_mcp(called, released: threading.Event) -> FastMCP:
    """A server whose list names a tool twice: `echo` ("Echoes its text."), `other`, then `echo` again ("Another
    echo."), as a hand-written server may list it (the spec wants a server's tool names unique)."""
    class TwiceListing(FastMCP):
        async def list_tools(self):
            listed = await super().list_tools()
            return [*listed, *(tool.model_copy(update={"description": "Another echo."})
                               for tool in listed if tool.name == "echo")]

    mcp = TwiceListing("chatter-test-twice", host="127.0.0.1", log_level="WARNING",
                       transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @mcp.tool(description="Echoes its text.")
    def echo(text: str) -> str:
        called("echo", {"text": text})
        return text

    @mcp.tool(description="Answers ok.")
    def other() -> str:
        return "ok"

    return mcp


def _echo_listing_more(name: str, more) -> FastMCP:
    """A server with the tool `echo` whose list also holds the tools `more()` gives (ones FastMCP would not make)."""
    class ListingMore(FastMCP):
        async def list_tools(self):
            return [*await super().list_tools(), *more()]

    mcp = ListingMore(name, host="127.0.0.1", log_level="WARNING",
                      transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @mcp.tool(description="Echoes its text.")
    def echo(text: str) -> str:
        return text

    return mcp


def build_nameless_tool_mcp(called, released: threading.Event) -> FastMCP:
    """A server listing `echo` and a tool whose name is empty (the spec wants a name of at least one character)."""
    return _echo_listing_more("chatter-test-nameless", lambda: [
        types.Tool(name="", description="A tool without a name.", inputSchema={"type": "object"})])


SCHEMA_PROPERTIES = 3000


def build_oversized_schema_mcp(called, released: threading.Event) -> FastMCP:
    """A server listing `echo`, `wide` (an input schema of SCHEMA_PROPERTIES integer properties, about 80 kB) and
    `huge` (one string property whose description is 3 MB)."""
    def oversized():
        wide = {"type": "object", "properties": {f"p{n:04}": {"type": "integer"} for n in range(SCHEMA_PROPERTIES)}}
        huge = {"type": "object", "properties": {"text": {"type": "string", "description": "x" * 3_000_000}}}
        return [types.Tool(name="wide", description="Wide.", inputSchema=wide),
                types.Tool(name="huge", description="Huge.", inputSchema=huge)]

    return _echo_listing_more("chatter-test-oversized", oversized)


def build_held_listing_mcp(called, released: threading.Event) -> FastMCP:
    """A server listing one tool it does not have, `vanished` (a call of it is "Unknown tool: vanished", as from a
    server that dropped it since), whose `tools/list` after the first is answered only once the test calls
    `release()`: a slow listing."""
    listings = []

    class HeldListing(FastMCP):
        async def list_tools(self):
            listings.append(time.monotonic())
            while len(listings) > 1 and not released.is_set():
                await asyncio.sleep(0.01)
            return [types.Tool(name="vanished", description="A tool the server no longer has.",
                               inputSchema={"type": "object"})]

    return HeldListing("chatter-test-held", host="127.0.0.1", log_level="WARNING",
                       transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


ENDLESS_BYTES = 64 * 1024 * 1024
ENDLESS_CHUNK = b"x" * 65536
ENDLESS_START = b'{"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "'
COMPRESSED_BYTES = 16 * 1024 * 1024


class McpTestServer:
    def __init__(self, build=build_mcp) -> None:
        self._build = build
        self.requests: list[dict] = []
        self.calls: list[tuple[str, dict]] = []
        self.token: str | None = None
        self.delay_s = 0.0
        self.released = threading.Event()
        self.endless_sent = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- what tests set and read ----------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root_url}/mcp"

    @property
    def sse_url(self) -> str:
        return f"{self.root_url}/sse"

    @property
    def malformed_url(self) -> str:
        return f"{self.root_url}/malformed"

    @property
    def redirect_url(self) -> str:
        return f"{self.root_url}/redirect"

    @property
    def empty_answer_url(self) -> str:
        return f"{self.root_url}/empty-answer"

    @property
    def endless_answer_url(self) -> str:
        return f"{self.root_url}/endless-answer"

    @property
    def endless_json_answer_url(self) -> str:
        return f"{self.root_url}/endless-json-answer"

    @property
    def compressed_answer_url(self) -> str:
        return f"{self.root_url}/compressed-answer"

    @property
    def endless_listing_url(self) -> str:
        return f"{self.root_url}/endless-listing"

    def require_token(self, token: str | None) -> None:
        self.token = token

    def slow_down(self, seconds: float) -> None:
        """Every request waits `seconds` before it is answered (a slow server), until `reset()`."""
        self.delay_s = seconds

    def release(self) -> None:
        """echo_header calls waiting now, and those made later, answer at once, until `reset()`."""
        self.released.set()

    def reset(self) -> McpTestServer:
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self.token = None
            self.delay_s = 0.0
            self.released.clear()
            self.endless_sent = 0
        return self

    def headers_seen(self, name: str) -> list[str | None]:
        """The value of header `name` on each request received, in order."""
        with self._lock:
            return [request["headers"].get(name.lower()) for request in self.requests]

    # --- the ASGI app ---------------------------------------------------------------------------------------
    def _app(self):
        def called(name: str, arguments: dict) -> None:
            with self._lock:
                self.calls.append((name, arguments))

        mcp = self._build(called, self.released)
        streamable = mcp.streamable_http_app()
        sse = mcp.sse_app()

        async def malformed(request: Request) -> Response:
            return Response(b'{"jsonrpc": "2.0", "id": 1, "result": ', media_type="application/json")

        async def redirect(request: Request) -> Response:
            return RedirectResponse(f"http://localhost:{self.port}/mcp", status_code=307)

        app = Starlette(routes=[*streamable.routes, *sse.routes, Route("/malformed", malformed, methods=["POST"]),
                                Route("/redirect", redirect, methods=["GET", "POST", "DELETE"])],
                        lifespan=lambda _app: mcp.session_manager.run())

        def endless(prefix: bytes):
            async def chunks():
                yield prefix + ENDLESS_START
                for _ in range(ENDLESS_BYTES // len(ENDLESS_CHUNK)):
                    yield ENDLESS_CHUNK
                    with self._lock:
                        self.endless_sent += len(ENDLESS_CHUNK)
                    await asyncio.sleep(0)  # (a send to a client gone returns at once: its going is seen here)
            return chunks()

        odd_answers = {  # path: (the method it answers oddly, its answer)
            "/empty-answer": ("tools/call", lambda: Response(b"", media_type="text/event-stream")),
            "/endless-answer": ("tools/call",
                                lambda: StreamingResponse(endless(b"event: message\ndata: "),
                                                          media_type="text/event-stream")),
            "/endless-json-answer": ("tools/call",
                                     lambda: StreamingResponse(endless(b""), media_type="application/json")),
            "/compressed-answer": ("tools/call", lambda: Response(
                gzip.compress(ENDLESS_START + b"x" * COMPRESSED_BYTES + b'"}]}}', compresslevel=1),
                media_type="application/json", headers={"Content-Encoding": "gzip"})),
            "/endless-listing": ("tools/list",
                                 lambda: StreamingResponse(endless(b"event: message\ndata: "),
                                                           media_type="text/event-stream")),
        }

        async def odd_answer(scope, receive, send):
            """/mcp, but one method's answer is odd (odd_answers)."""
            method, answer = odd_answers[scope["path"]]
            body, more = b"", True
            while more:
                message = await receive()
                body, more = body + message.get("body", b""), message.get("more_body", False)
            if scope["method"] == "POST" and json.loads(body or b"{}").get("method") == method:
                await answer()(scope, receive, send)
                return
            replayed = [{"type": "http.request", "body": body, "more_body": False}]

            async def replay():
                return replayed.pop() if replayed else await receive()
            await app({**scope, "path": "/mcp", "raw_path": b"/mcp"}, replay, send)

        async def guarded(scope, receive, send):
            if scope["type"] == "http":
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                with self._lock:
                    self.requests.append({"method": scope["method"], "path": scope["path"], "headers": headers,
                                          "client": tuple(scope["client"] or ())})
                    token, delay_s = self.token, self.delay_s
                if delay_s:
                    await asyncio.sleep(delay_s)
                if token is not None and headers.get("authorization") != f"Bearer {token}":
                    await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                    return
            await (odd_answer if scope.get("path") in odd_answers else app)(scope, receive, send)

        return guarded

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self, deadline_s: float = 20) -> McpTestServer:
        if self._server is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="mcp-test-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + deadline_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
