"""What /langgraph/ says about itself: its liveness (`/ok`) and its info (`/info`), in the stock server's shapes.
Clients probe them before anything else (the SDK's integration suite waits for /ok, agent-chat-ui calls /info to
say "connected"), without a key."""
from __future__ import annotations

import functools
from importlib.metadata import version

# Chatter has no release numbering of its own yet; clients read this field as a semantic version.
SERVER_VERSION = "1.0.0"


@functools.cache
def server_info() -> dict:
    return {
        "version": SERVER_VERSION,
        "langgraph_py_version": version("langgraph"),
        # What the stock server's flags say: assistants and crons are served; nothing is traced to LangSmith
        # (Chatter keeps its own traces: node rows, events, audit).
        "flags": {"assistants": True, "crons": True, "langsmith": False},
        "metadata": {},
    }
