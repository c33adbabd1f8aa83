"""A real MCP server over stdio for tests: the official SDK's FastMCP, run with transport="stdio" (the process
Chatter starts for a server the operator declared with a `command`).

    python tests/mcp_stdio_server.py

Tools: `add(a, b)`; `echo_env(name)`, the value of the process's environment variable `name` ("" when unset);
`pid()`, the process's id (which process answered: a kept session is one process).
"""
import os

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("chatter-test-stdio", log_level="WARNING")


@mcp.tool(description="Adds two numbers.")
def add(a: float, b: float) -> float:
    return a + b


@mcp.tool(description="Returns the value of one environment variable of the server's process.")
def echo_env(name: str) -> str:
    return os.environ.get(name, "")


@mcp.tool(description="Returns the server process's id.")
def pid() -> int:
    return os.getpid()


if __name__ == "__main__":
    mcp.run(transport="stdio")
