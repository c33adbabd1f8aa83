"""The error shape of each HTTP surface, as its clients read it: /api/v1/ {"error": {"code", "message",
"details"}}, /langgraph/ {"detail": …} (LangGraph's server), /v1/ OpenAI's {"error": {"message", "type",
"param", "code"}}; the thread protocol's commands (/langgraph/threads/<id>/commands) its envelope {"type":
"error", "id", "error", "message"}, which the SDK reads there; /langgraph/mcp JSON-RPC's {"jsonrpc", "id",
"error"}."""
from __future__ import annotations

import json


def assert_surface_error(status: int, content_type: str, content: bytes, *, path: str) -> dict:
    """A 4xx answer to a request for `path`, in its surface's error shape; returns the body."""
    what = (status, path, content[:300])
    assert 400 <= status < 500, what
    assert content_type.split(";")[0].strip() == "application/json", what
    body = json.loads(content)
    if path.startswith("/api/"):
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, what
        assert body["error"]["code"] and body["error"]["message"], what
        assert isinstance(body["error"]["details"], list), what
        for item in body["error"]["details"]:
            assert set(item) == {"path", "code", "message"}, what
    elif path.startswith("/langgraph/threads/") and path.endswith("/commands") and body.get("type") == "error":
        assert {"id", "error", "message"} <= set(body) and body["error"] and body["message"], what
    elif path.startswith("/langgraph/mcp") and isinstance(body, dict) and "jsonrpc" in body:
        # MCP: what reaches the protocol is refused in JSON-RPC's shape (refusals before it: the API's, below)
        assert set(body) == {"jsonrpc", "id", "error"} and body["jsonrpc"] == "2.0", what
        assert isinstance(body["error"]["code"], int) and body["error"]["message"], what
    elif path.startswith("/langgraph/"):
        assert isinstance(body, dict) and body.get("detail"), what
    elif path.startswith("/v1/"):
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, what
        assert body["error"]["message"] and body["error"]["type"], what
    else:
        raise AssertionError(f"not a JSON surface: {path}")
    return body
