"""A real MCP server in a process of its own, for tests that kill it in the middle of a call or of a listing of its
tools: the official SDK's FastMCP over Streamable HTTP at http://127.0.0.1:<port>/mcp (with `--sse`, over the older
HTTP+SSE transport at http://127.0.0.1:<port>/sse), served by uvicorn.

    python tests/mcp_process_server.py [--sse] [--event-ids] [--listing-hold PATH]

It prints its port on its first line, then `called <tool>` as each call of a tool starts. With `--event-ids` it keeps
the events of its streams (an in-memory event store), so each SSE event carries an id a client may resume from.
With `--listing-hold PATH`, a listing of its tools while the file PATH exists logs "listing" (a notification on the
listing's stream, or on the HTTP+SSE transport's one stream: its answer's stream is open) and answers only once the
file is gone; the server prints `listing tools` once that notification is in the client's socket.

Tools: `sleep(seconds)`, logs "sleeping" (a notification on the call's stream), waits, then answers "slept".
"""
import argparse
import asyncio
import itertools
import os
import socket

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.streamable_http import EventStore


class MemoryEventStore(EventStore):
    """Every event of every stream, kept while the process lives."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []  # (event id, stream id, message)
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        from mcp.server.streamable_http import EventMessage

        stream = next((stream for event_id, stream, _ in self.events if event_id == last_event_id), None)
        if stream is None:
            return None
        after = False
        for event_id, stream_id, message in self.events:
            if after and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream


class HeldListing(FastMCP):
    """FastMCP whose listing of its tools is held while the file `listing_hold` exists (see the module's doc)."""

    def __init__(self, *args, listing_hold: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.listing_hold = listing_hold

    async def list_tools(self):
        if self.listing_hold and os.path.exists(self.listing_hold):
            await self.get_context().info("listing")
            while os.path.exists(self.listing_hold):  # (or until the process is killed)
                await asyncio.sleep(0.02)
        return await super().list_tools()


def listing_told(app):
    """ASGI middleware: prints `listing tools` once a response's body carrying the "listing" notification has been
    handed to the server (written to the socket: the client has it, whenever this process dies)."""

    async def told(scope, receive, send):
        async def sent(message):
            await send(message)
            if message["type"] == "http.response.body" and b'"listing"' in message.get("body", b""):
                print("listing tools", flush=True)

        await app(scope, receive, sent)

    return told


def build(event_ids: bool, listing_hold: str | None = None) -> FastMCP:
    mcp = HeldListing("chatter-test-process", log_level="WARNING", listing_hold=listing_hold,
                      event_store=MemoryEventStore() if event_ids else None)

    @mcp.tool(description="Waits for some seconds, then answers.")
    async def sleep(seconds: float, ctx: Context) -> str:
        print("called sleep", flush=True)
        await ctx.info("sleeping")  # on the call's own stream: a client that has read it can resume after it
        await asyncio.sleep(seconds)
        return "slept"

    return mcp


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sse", action="store_true")
    parser.add_argument("--event-ids", action="store_true")
    parser.add_argument("--listing-hold", metavar="PATH")
    arguments = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in its backlog until uvicorn serves
    print(sock.getsockname()[1], flush=True)
    mcp = build(arguments.event_ids, arguments.listing_hold)
    app = listing_told(mcp.sse_app() if arguments.sse else mcp.streamable_http_app())
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
