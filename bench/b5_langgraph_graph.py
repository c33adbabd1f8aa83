"""B5's peer: Chatter's universal_chat graph, compiled by Chatter's own engine, with the same `local` model, served
by LangGraph's own Agent Server (`langgraph dev`, in-memory). See bench/b5_http_turns.py.

The served graph `chat` has one node, `turn`, which runs the turn exactly as B1's bare invocation does:
`graph_run(universal_chat, ctx=RunContext(config, NullHooks()), message=...)`: Chatter's compiled graph, node
wrappers, routing and model, without the recording hooks (no database, no events). The wrapper exists because the
server's JSON input cannot put LangChain message objects into universal_chat's state (its `messages` channel
concatenates, it does not coerce dicts as `add_messages` would); it costs one extra LangGraph step, measured by
`python bench/b5_langgraph_graph.py` (about 0.3 ms here) and printed by B5 beside the figures.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Settings only (no django.setup(), no database): the engine reads its defaults and the model's token delay.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ.setdefault("SECRET_KEY", "bench-langgraph-peer")

from langgraph.graph import END, START, StateGraph

from workflows.builtins import BUILTIN_TEMPLATES
from workflows.engine.compile import graph_compile, graph_run
from workflows.engine.config import config_resolve
from workflows.engine.graph import parse_graph
from workflows.engine.nodes import last_ai_message
from workflows.engine.runtime import NullHooks, RunContext

_TEMPLATE = next(t for t in BUILTIN_TEMPLATES if t["key"] == "universal_chat")
GRAPH = parse_graph(_TEMPLATE["graph"])
CONFIG = config_resolve(_TEMPLATE["params"], {})
graph_compile(GRAPH)  # compiled once, cached by the engine


class Turn(TypedDict, total=False):
    message: str
    reply: str
    usage: dict


def bare_turn(message: str) -> dict:
    """One chat turn through Chatter's engine with nothing recorded: the reply and its usage."""
    ctx = RunContext(config=CONFIG, hooks=NullHooks())
    state = graph_run(GRAPH, ctx=ctx, message=message)
    reply = last_ai_message(state)
    return {"reply": reply.content if reply else "", "usage": ctx.usage.token_fields()}


def _turn(state: Turn) -> dict:
    return bare_turn(state["message"])


_builder = StateGraph(Turn)
_builder.add_node("turn", _turn)
_builder.add_edge(START, "turn")
_builder.add_edge("turn", END)
graph = _builder.compile(name="chat")


if __name__ == "__main__":
    import time

    for _ in range(50):
        bare_turn("hello there"), graph.invoke({"message": "hello there"})
    for name, call in (("graph_run, bare", lambda: bare_turn("hello there")),
                       ("one-node wrapper graph", lambda: graph.invoke({"message": "hello there"}))):
        times = []
        for _ in range(300):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        times.sort()
        print(f"{name}: median {times[len(times) // 2] * 1000:.3f} ms")
    print(graph.invoke({"message": "What is 12*7?"}))
