"""A real MCP server in a process of its own, for tests that kill it in the middle of a call: the official SDK's
FastMCP over Streamable HTTP at http://127.0.0.1:<port>/mcp, served by uvicorn.

    python tests/mcp_process_server.py [--event-ids]

It prints its port on its first line, then `called <tool>` as each call of a tool starts. With `--event-ids` it keeps
the events of its streams (an in-memory event store), so each SSE event carries an id a client may resume from.

Tools: `sleep(seconds)`, logs "sleeping" (a notification on the call's stream), waits, then answers "slept".
"""
import argparse
import asyncio
import itertools
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


def build(event_ids: bool) -> FastMCP:
    mcp = FastMCP("chatter-test-process", log_level="WARNING", event_store=MemoryEventStore() if event_ids else None)

    @mcp.tool(description="Waits for some seconds, then answers.")
    async def sleep(seconds: float, ctx: Context) -> str:
        print("called sleep", flush=True)
        await ctx.info("sleeping")  # on the call's own stream: a client that has read it can resume after it
        await asyncio.sleep(seconds)
        return "slept"

    return mcp


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--event-ids", action="store_true")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in its backlog until uvicorn serves
    print(sock.getsockname()[1], flush=True)
    app = build(parser.parse_args().event_ids).streamable_http_app()
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
