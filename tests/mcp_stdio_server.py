"""A real MCP server over stdio for tests: the official SDK's FastMCP, run with transport="stdio" (the process
Chatter starts for a server the operator declared with a `command`).

    python tests/mcp_stdio_server.py

Tools: `add(a, b)`; `echo_env(name)`, the value of the process's environment variable `name` ("" when unset);
`pid()`, the process's id (which process answered: a kept session is one process); `debug_echo(text)`, which first
prints `debug: processing <text>` to its output, as a stray debugging print would (a line that is no message of
the protocol, quoting its caller's arguments), then answers `text`; `log_env(name)`, which prints `using
<name>=<value>` to its error output (a server telling its operator its own token).

With the environment variable LISTING_HOLD=PATH, a listing of its tools while the file PATH exists writes the
process's id to PATH.pid (whole: written aside, then renamed) and answers only once the file is gone; with
CALL_HOLD=PATH, a call of `pid` does the same. With OUTPUT_KEPT=PATH, it starts a process (its id written to PATH)
that keeps its output open: its output does not end when it is killed, only its input.
"""
import asyncio
import os
import subprocess
import sys

from mcp.server.fastmcp import FastMCP


async def held(variable: str) -> None:
    """Held while the file the environment variable `variable` names exists (see the module's doc)."""
    hold = os.environ.get(variable)
    if hold and os.path.exists(hold):
        with open(f"{hold}.pid.part", "w") as file:
            file.write(str(os.getpid()))
        os.replace(f"{hold}.pid.part", f"{hold}.pid")
        while os.path.exists(hold):  # (or until the process is killed)
            await asyncio.sleep(0.02)


class HeldListing(FastMCP):
    """FastMCP whose listing of its tools is held while the file LISTING_HOLD names exists (see the module's doc)."""

    async def list_tools(self):
        await held("LISTING_HOLD")
        return await super().list_tools()


mcp = HeldListing("chatter-test-stdio", log_level="WARNING")


@mcp.tool(description="Adds two numbers.")
def add(a: float, b: float) -> float:
    return a + b


@mcp.tool(description="Returns the value of one environment variable of the server's process.")
def echo_env(name: str) -> str:
    return os.environ.get(name, "")


@mcp.tool(description="Prints the value of one environment variable to the process's error output.")
def log_env(name: str) -> str:
    print(f"using {name}={os.environ.get(name, '')}", file=sys.stderr, flush=True)
    return "logged"


@mcp.tool(description="Echoes a text, after a stray debugging print of it to the protocol's output.")
def debug_echo(text: str) -> str:
    print(f"debug: processing {text}", flush=True)
    return text


@mcp.tool(description="Returns the server process's id.")
async def pid() -> int:
    await held("CALL_HOLD")
    return os.getpid()


if __name__ == "__main__":
    if os.environ.get("OUTPUT_KEPT"):  # a process holding this one's stdout, not its stdin
        keeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdin=subprocess.DEVNULL)
        with open(os.environ["OUTPUT_KEPT"], "a") as file:
            file.write(f"{keeper.pid}\n")
    mcp.run(transport="stdio")
