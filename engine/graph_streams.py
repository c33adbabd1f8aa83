"""What of a registered graph's own stream its run keeps (engine.python_graphs.graph_stream_run), as
(method, namespace, data) for its run's log (the recorder's `graph_streamed`): LangGraph's protocol stream
(astream_events v3) for the thread protocol, else the classic stream modes; and a state's values as JSON (as_json)."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

CLASSIC_MODES = ["values", "updates", "custom"]


def as_json(value):
    """A state value as JSON: LangChain's messages (and any pydantic model) as their dicts, tuples as lists, a
    LangGraph Interrupt as {"value", "id"}."""
    if isinstance(value, dict):
        return {str(key): as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [as_json(item) for item in value]
    if hasattr(value, "model_dump"):
        return as_json(value.model_dump())
    if type(value).__name__ == "Interrupt" and hasattr(value, "id"):
        return {"value": as_json(value.value), "id": value.id}
    if isinstance(value, (str, int, float, bool, datetime, date, Decimal)) or value is None:
        return value  # (what a JSON encoder such as Django's writes as it should)
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "__dict__"):
        return {key: as_json(item) for key, item in vars(value).items() if not key.startswith("_")}
    return str(value)


class ProtocolEvents:
    """What of LangGraph's protocol stream (astream_events v3) a run keeps, as (method, namespace, data): the
    graph's values (its own, not its subgraphs'), updates (an interrupt is the run's question, not an update), custom
    parts, its chat models' message deltas (a message a node returned whole is in the values), tool lifecycles, and
    its subgraphs' starts (the run's own lifecycle is the run's events). `classic`: for the classic stream modes,
    where a static breakpoint's empty interrupt is an update, as LangGraph's server streams it. `subgraphs`: a
    stream shows the subgraphs' parts: their values and tasks are kept too (the graph's own tasks are its run's node
    events)."""

    def __init__(self, *, classic: bool = False, subgraphs: bool = False):
        self.message_ids: dict[tuple, str] = {}  # namespace → the message streaming there
        self.classic, self.subgraphs = classic, subgraphs

    def kept(self, event: dict) -> list[tuple[str, list, Any]]:
        method, params = event.get("method"), event.get("params") or {}
        namespace, data = list(params.get("namespace") or []), params.get("data")
        if method == "values":
            return [] if namespace and not self.subgraphs else [("values", namespace, as_json(data))]
        if method == "tasks":
            return [("tasks", namespace, as_json(data))] if namespace and self.subgraphs else []
        if method == "updates":
            if isinstance(data, dict) and "__interrupt__" in data and (data["__interrupt__"] or not self.classic):
                return []
            return [("updates", namespace, as_json(data))]
        if method == "custom" or (isinstance(method, str) and method.startswith("custom:")):
            return [("custom", namespace, as_json(data))]
        if method == "checkpoints":
            return [("checkpoints", namespace, as_json(data))]
        if method == "messages":
            payload, metadata = (data[0], data[1]) if isinstance(data, (list, tuple)) and len(data) == 2 else (
                data, {})
            if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
                return []
            payload = as_json(payload)
            if payload["event"] == "message-start":
                self.message_ids[tuple(namespace)] = payload.get("id")
                node = (metadata or {}).get("langgraph_node")
                if node:
                    payload["metadata"] = {**(payload.get("metadata") or {}), "langgraph_node": node}
            elif self.message_ids.get(tuple(namespace)):
                payload.setdefault("message_id", self.message_ids[tuple(namespace)])
            return [("messages", namespace, payload)]
        if method == "tools":
            return [("tools", namespace, as_json(data))]
        if method == "lifecycle" and isinstance(data, dict):
            inner = list(data.get("namespace") or [])
            if inner and data.get("event") == "started":
                return [("lifecycle", inner, as_json({k: v for k, v in data.items() if k != "namespace"}))]
        return []


async def classic_stream(compiled, run_input, config, *, modes: list[str], events: bool, protocol: ProtocolEvents,
                         **kwargs):
    """(method, namespace, data) of a registered graph's run for the classic stream modes: the graph's own stream
    (`modes`, its subgraphs' too), its chat models' chunks as LangGraph's `messages` mode gives them (each
    [chunk, metadata], as `message_chunk`), and with `events` every event of its astream_events (version v2) as
    it is (`graph_event`), but for the graph's own output stream (its root's on_chain_stream), which is the modes'
    parts, as LangGraph's server streams them."""
    def parts(namespace, mode, part) -> list[tuple[str, list, Any]]:
        if mode == "messages":
            chunk, metadata = part
            return [("message_chunk", list(namespace), [as_json(chunk), as_json(metadata)])]
        return protocol.kept({"method": mode, "params": {"namespace": list(namespace), "data": part}})

    if not events:
        async for namespace, mode, part in compiled.astream(run_input, config, subgraphs=True, stream_mode=modes,
                                                            **kwargs):
            for kept in parts(namespace, mode, part):
                yield kept
        return
    root = None
    async for event in compiled.astream_events(run_input, config, version="v2", subgraphs=True, stream_mode=modes,
                                               **kwargs):
        if root is None and not event.get("parent_ids"):
            root = event.get("run_id")
        if event.get("event") == "on_chain_stream" and event.get("run_id") == root:
            for kept in parts(*event["data"]["chunk"]):
                yield kept
        else:
            yield "graph_event", [], as_json(event)
