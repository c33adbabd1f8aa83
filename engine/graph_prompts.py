"""prompt_fetch: a stored prompt for a node of your own Python graph (CHATTER_GRAPHS), as a `model` node's
`prompt` is fetched: the run owner's, by label (default `production`; a split draws once per conversation) or
version, with {{variables}} filled. The model calls the node makes next record the version, like every call.

    from engine.graph_prompts import prompt_fetch

    def agent(state: MessagesState) -> dict:
        prompt = prompt_fetch("support", label="production", variables={"product": "kettle"})
        model = ChatOpenAI(model=prompt.config.get("model", "gpt-4o-mini"))
        return {"messages": [model.invoke([*prompt.messages, *state["messages"]])]}
"""
from __future__ import annotations

from engine.errors import RunError
from engine.graph_accounting import GraphAccounting
from engine.hooks import FetchedPrompt


def prompt_fetch(name: str, *, label: str | None = None, version: int | None = None,
                 variables: dict | None = None) -> FetchedPrompt:
    """Inside a node of a Python graph Chatter runs (LangGraph's get_config() names the run through the callbacks
    Chatter gave the graph); elsewhere a RunError."""
    from langgraph.config import get_config

    try:
        callbacks = get_config().get("callbacks")
    except RuntimeError:  # not inside a LangGraph run
        callbacks = None
    handlers = getattr(callbacks, "handlers", callbacks) or []
    accounting = next((handler for handler in handlers if isinstance(handler, GraphAccounting)), None)
    if accounting is None:
        raise RunError("prompt_fetch is called inside a node of a graph Chatter runs")
    return accounting.prompt_for(getattr(callbacks, "parent_run_id", None),
                                 {"name": name, "label": label, "version": version}, dict(variables or {}))
