"""A graph with its own state (not a chat's): an async node that streams custom events, a hand-made tool call,
a question to a person (interrupt()), and a subgraph. Postponed annotations, as many modules have them."""
from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    value: str
    items: Annotated[list[str], operator.add]


class SubState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


async def greet(state: State) -> dict:
    writer = get_stream_writer()
    writer({"step": "greet", "phase": "start"})
    writer({"step": "greet", "phase": "end"})
    return {"messages": [AIMessage("Hello there", id="greet-1")], "value": "greeted", "items": ["greeted"]}


def use_tool(state: State) -> dict:
    call = AIMessage("", id="tool-call-1", tool_calls=[{"id": "tc-1", "name": "lookup", "args": {"q": "x"}}])
    return {"messages": [call, ToolMessage("found x", tool_call_id="tc-1", id="tool-result-1")], "items": ["tool"]}


def ask(state: State) -> dict:
    answer = interrupt({"question": "Go on?", "value": state["value"]})
    return {"messages": [AIMessage(f"You said {answer}", id="asked-1")], "items": ["asked"]}


def _sub(state: SubState) -> dict:
    return {"messages": [AIMessage("from the subgraph", id="sub-1")]}


_sub_builder = StateGraph(SubState)
_sub_builder.add_node("inner", _sub)
_sub_builder.add_edge(START, "inner")
_sub_builder.add_edge("inner", END)
subgraph = _sub_builder.compile()


def build(config=None, **compiled):
    builder = StateGraph(State)
    builder.add_node("greet", greet)
    builder.add_node("use_tool", use_tool)
    builder.add_node("ask", ask)
    builder.add_node("sub", subgraph)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", "use_tool")
    builder.add_edge("use_tool", "ask")
    builder.add_edge("ask", "sub")
    builder.add_edge("sub", END)
    return builder.compile(**compiled)


graph = build()
stopping = build(interrupt_after=["greet"])  # a static breakpoint compiled into the graph


async def make_graph(config):
    """A factory, as the Agent Server calls it: with the run's config."""
    if "configurable" not in config:
        raise TypeError("the factory must be given the run's config")
    return build()


async def make_graph_with_runtime(config, runtime):
    """A factory asking for LangGraph's ServerRuntime too: refused by name (Chatter cannot make one)."""
    return build()
