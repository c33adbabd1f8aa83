"""Graphs as LangGraph users write them, for the places Chatter's Agent Server API must answer as the stock server:
a graph with a `context_schema` (its defaults for an empty context), an async agent on a streaming chat model (its
tokens as `messages-tuple` and its `astream_events` as `events`), nested subgraphs, a state whose channel is a
DeltaChannel (as a `deepagents` agent's messages are), a state wider than the graph's input and output, a slow
counter (two steps that each wait `delay` seconds, then add 1: runs of one thread that overlapped would lose each
other's additions), and a counter that raises ValueError when its input asks it to fail."""
from __future__ import annotations

import asyncio
import itertools
import operator
from dataclasses import dataclass
from typing import Annotated

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from typing_extensions import TypedDict  # (pydantic reads its schema on Python < 3.12)


@dataclass
class Greeting:
    greeting: str = "hello"
    name: str = "world"


class Said(TypedDict, total=False):
    text: str


def _say(state: Said, runtime: Runtime[Greeting]) -> dict:
    return {"text": f"{runtime.context.greeting}, {runtime.context.name}"}


_context_builder = StateGraph(Said, context_schema=Greeting)
_context_builder.add_node("say", _say)
_context_builder.add_edge(START, "say")
_context_builder.add_edge("say", END)
context_graph = _context_builder.compile()

REPLY = "the quick brown fox"


def _model() -> GenericFakeChatModel:
    """A chat model that streams REPLY word by word (no network)."""
    return GenericFakeChatModel(messages=itertools.cycle([REPLY]))


async def _agent(state: MessagesState) -> dict:
    return {"messages": [await _model().ainvoke(state["messages"])]}


_agent_builder = StateGraph(MessagesState)
_agent_builder.add_node("agent", _agent)
_agent_builder.add_edge(START, "agent")
_agent_builder.add_edge("agent", END)
async_agent = _agent_builder.compile()


class Nested(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _leaf(state: Nested) -> dict:
    return {"messages": [AIMessage("from the inner graph")]}


_inner_builder = StateGraph(Nested)
_inner_builder.add_node("leaf", _leaf)
_inner_builder.add_edge(START, "leaf")
_inner_builder.add_edge("leaf", END)
_inner = _inner_builder.compile()

_middle_builder = StateGraph(Nested)
_middle_builder.add_node("inner", _inner)
_middle_builder.add_edge(START, "inner")
_middle_builder.add_edge("inner", END)
_middle = _middle_builder.compile()

_outer_builder = StateGraph(MessagesState)
_outer_builder.add_node("middle", _middle)
_outer_builder.add_edge(START, "middle")
_outer_builder.add_edge("middle", END)
nested = _outer_builder.compile()


def _concat(state: list | None, writes) -> list:
    """A DeltaChannel reducer: the writes of a step (lists) appended in order."""
    return list(itertools.chain(state or [], *writes))


class Ledger(TypedDict):
    entries: Annotated[list[str], DeltaChannel(_concat, snapshot_frequency=50)]
    total: Annotated[int, operator.add]


def _book(state: Ledger) -> dict:
    return {"entries": [f"entry {len(state.get('entries') or []) + 1}"], "total": 1}


_ledger_builder = StateGraph(Ledger)
_ledger_builder.add_node("book", _book)
_ledger_builder.add_edge(START, "book")
_ledger_builder.add_edge("book", END)
delta_ledger = _ledger_builder.compile()


class Question(TypedDict):
    question: str


class Answer(TypedDict):
    answer: str


class Working(TypedDict):
    question: str
    answer: str
    scratch: str


def _think(state: Working) -> dict:
    return {"scratch": "thinking", "answer": state["question"].upper()}


_narrow_builder = StateGraph(Working, input_schema=Question, output_schema=Answer)
_narrow_builder.add_node("think", _think)
_narrow_builder.add_edge(START, "think")
_narrow_builder.add_edge("think", END)
narrow_io = _narrow_builder.compile()  # its state keeps more than it takes in or gives out


class Count(TypedDict, total=False):
    count: Annotated[int, operator.add]
    delay: float


async def _step(state: Count) -> dict:
    await asyncio.sleep(state.get("delay") or 0)
    return {"count": 1}


_counter_builder = StateGraph(Count)
_counter_builder.add_node("first", _step)
_counter_builder.add_node("second", _step)
_counter_builder.add_edge(START, "first")
_counter_builder.add_edge("first", "second")
_counter_builder.add_edge("second", END)
slow_counter = _counter_builder.compile()


class Attempt(TypedDict, total=False):
    count: Annotated[int, operator.add]
    fail: bool


def _attempt(state: Attempt) -> dict:
    if state.get("fail"):
        raise ValueError("asked to fail")
    return {"count": 1, "fail": False}


_failing_builder = StateGraph(Attempt)
_failing_builder.add_node("attempt", _attempt)
_failing_builder.add_edge(START, "attempt")
_failing_builder.add_edge("attempt", END)
failing = _failing_builder.compile()
