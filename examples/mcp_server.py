"""A small MCP server to try Chatter's tools with: an issue tracker's search, made with the official SDK's FastMCP
and served over Streamable HTTP at http://127.0.0.1:<port>/mcp (docs/tools.md's walk-through).

    .venv/bin/python examples/mcp_server.py [--port 8765]

Tools: `search_issues(query)`, the issues whose title has the query's words; `get_issue(id)`, one issue.
"""
import argparse

from mcp.server.fastmcp import FastMCP

ISSUES = [
    {"id": 101, "title": "Login fails after password reset", "state": "open"},
    {"id": 102, "title": "Export to CSV drops the last row", "state": "open"},
    {"id": 103, "title": "Login page slow on mobile", "state": "closed"},
]

mcp = FastMCP("issues", log_level="WARNING")


@mcp.tool(description="Search the issue tracker: the issues whose title contains every word of the query.")
def search_issues(query: str) -> str:
    words = query.lower().split()
    found = [issue for issue in ISSUES if all(word in issue["title"].lower() for word in words)]
    return "\n".join(f"#{issue['id']} [{issue['state']}] {issue['title']}" for issue in found) or "no issues found"


@mcp.tool(description="One issue by its number.")
def get_issue(id: int) -> dict:
    return next((issue for issue in ISSUES if issue["id"] == id), {})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    mcp.settings.port = parser.parse_args().port
    mcp.run(transport="streamable-http")
