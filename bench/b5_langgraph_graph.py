"""The graph B5's LangGraph servers serve as `chat`: Chatter's universal_chat graph, compiled by Chatter's own
engine, with the same `local` model, run with nothing recorded (`bench.chatter_calls.BareChat`, B1's bare side).

It has one node, `turn`, that runs that compiled graph: the servers' JSON input cannot put LangChain message
objects into universal_chat's state (its `messages` channel concatenates, it does not coerce dicts as
`add_messages` would). Served by a LangGraph server, the inner graph runs as a subgraph and inherits the
server's checkpointer, so its steps are checkpointed as if the server served universal_chat itself. What the
extra LangGraph step costs is printed by

    python -m bench.b5_langgraph_graph          (in a LangGraph venv, PYTHONPATH=. and the project's settings)

and by B5 beside its figures.
"""
from __future__ import annotations

import os
import time
from typing import TypedDict

# Settings only (no django.setup(), no database): the engine reads its defaults and the model's token delay.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ.setdefault("SECRET_KEY", "bench-langgraph-peer")

from langgraph.graph import END, START, StateGraph  # noqa: E402 - after the settings above

from bench.chatter_calls import BareChat  # noqa: E402

CHAT = BareChat()


class Turn(TypedDict, total=False):
    message: str
    reply: str
    usage: dict


def _turn(state: Turn) -> dict:
    return CHAT.turn(state["message"])


_builder = StateGraph(Turn)
_builder.add_node("turn", _turn)
_builder.add_edge(START, "turn")
_builder.add_edge("turn", END)
graph = _builder.compile(name="chat")


def main() -> None:
    for _ in range(50):
        CHAT.turn("hello there"), graph.invoke({"message": "hello there"})
    for name, call in (("universal_chat compiled, bare", lambda: CHAT.turn("hello there")),
                       ("one-node wrapper graph around it", lambda: graph.invoke({"message": "hello there"}))):
        times = []
        for _ in range(300):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        times.sort()
        print(f"{name}: median {times[len(times) // 2] * 1000:.3f} ms per turn")
    print(graph.invoke({"message": "What is 12*7?"}))


if __name__ == "__main__":
    main()
