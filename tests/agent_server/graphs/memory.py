"""A graph that keeps notes in LangGraph's store and recalls them by meaning: `remember` puts a note with the
store's sync API (a sync node, on LangGraph's executor), `recall` searches with its async one. Registered by
store_langgraph.json, whose store has an index (tests/agent_server/test_store_by_meaning.py)."""
from typing import TypedDict

from langgraph.graph import START, StateGraph
from langgraph.store.base import BaseStore


class State(TypedDict, total=False):
    remember: str
    question: str
    recalled: list


def remember(state: State, *, store: BaseStore) -> dict:
    if state.get("remember"):
        store.put(("notes",), "from-graph", {"text": state["remember"]})
    return {}


async def recall(state: State, *, store: BaseStore) -> dict:
    found = await store.asearch(("notes",), query=state["question"], limit=3)
    return {"recalled": [{"key": item.key, "score": item.score} for item in found]}


builder = StateGraph(State)
builder.add_node("remember", remember)
builder.add_node("recall", recall)
builder.add_edge(START, "remember")
builder.add_edge("remember", "recall")
graph = builder.compile()
