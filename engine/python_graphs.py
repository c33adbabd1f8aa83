"""Python graphs of your own (CHATTER_GRAPHS: LangGraph graphs, compiled or factories) run as they are
(docs/api/langgraph.md#your-own-python-graphs).

A registered graph's run executes the graph itself (`graph_stream_run`), its thread's state checkpointed on
Chatter's checkpointer. Nothing wraps it: the run's rows and events come from LangChain's callbacks
(graph_accounting.GraphAccounting) and LangGraph's stream (`values`, `updates`, `custom`: graph_streams). The graph
runs on an event loop of its own thread; whatever touches the database runs on the run's own thread, which serves the
loop's and the callbacks' requests until the graph ends (graph_accounting.RunThread). A `python_graph` node inside a
Chatter graph runs a registered graph as one node (`python_graph_invoke`).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from decimal import Decimal
from typing import Any

from langchain_core.messages import BaseMessage

from engine.errors import GraphRaised, InvalidInput, LimitExceeded, RunError
from engine.graph import Node
from engine.graph_accounting import GraphAccounting, RunThread
from engine.graph_registry import factory_arguments, is_factory, registered_target
from engine.graph_streams import CLASSIC_MODES, ProtocolEvents, as_json, classic_stream
from engine.money import usd
from engine.runtime import RunContext
from engine.usage import Usage

logger = logging.getLogger(__name__)

MAX_STEPS = 100  # a python_graph node's steps inside a Chatter graph
# A registered graph's run's steps when its config names no `recursion_limit`: the stock Agent Server's default
# (LANGGRAPH_DEFAULT_RECURSION_LIMIT), so a graph that runs there runs here; its deadline bounds it too.
DEFAULT_RECURSION_LIMIT = 10011
MESSAGES_USAGE = "__messages_usage__"  # in a registered graph run's final state: each AI message's model call
# In a registered graph run's final state when it stopped at a static breakpoint: the nodes that run next. The run
# ends (as LangGraph's server ends it, `success`); its thread waits there, `interrupted`, until a run goes on.
STOPPED_BEFORE = "__stopped_before__"


async def graph_build(name: str, *, config: dict | None = None):
    """The compiled graph a registered name stands for; a factory is called (and awaited) with the run's config."""
    target = registered_target(name)
    if not is_factory(target):
        return target
    built = target(*factory_arguments(target, config=config or {"configurable": {}}))
    if inspect.isawaitable(built):
        built = await built
    if hasattr(built, "__aenter__"):  # an async context manager yielding the graph
        raise InvalidInput(f"graph factory {name!r} returns a context manager, which Chatter does not run")
    return built


def graph_load(name: str, *, config: dict | None = None):
    """The compiled graph of a registered name, for reading its structure or a thread's state (a factory is called
    with `config`, the thread's)."""
    target = registered_target(name)
    if not is_factory(target):
        return target
    return asyncio.run(graph_build(name, config=config))


def booked_as_json(booked: dict) -> dict:
    """Each AI message's call usage (GraphAccounting.usage_by_message) as JSON, kept while a run waits for input
    (booked_from_json reads it back when it goes on)."""
    return {message_id: {"provider": entry["provider"], "model": entry["model"],
                         **({"usage": {**as_json(vars(entry["usage"])), "cost": usd(entry["usage"].cost)}}
                            if "usage" in entry else {})}
            for message_id, entry in booked.items()}


def booked_from_json(kept: dict | None) -> dict:
    booked = {}
    for message_id, entry in (kept or {}).items():
        booked[message_id] = {"provider": entry["provider"], "model": entry["model"]}
        if "usage" in entry:
            booked[message_id]["usage"] = Usage(**{**entry["usage"], "cost": Decimal(entry["usage"]["cost"])})
    return booked


def registered_graph_name(graph) -> str | None:
    """The registered graph a Chatter graph runs as it is (a python_graph node between start and end); None when
    it is a graph of Chatter's own nodes."""
    working = [node for node in graph.nodes if node.type not in ("start", "end")]
    if len(working) == 1 and working[0].type == "python_graph":
        return working[0].config["graph"]
    return None


def graph_input_of(run_input: dict, *, message_id: str | None = None) -> Any:
    """What a registered graph's run is given: the input as the request gave it (the Agent Server API), or a chat
    turn's message (or the gateway's messages) as its `messages`; `message_id`: the id of the turn's message in the
    conversation, which its message in the graph's state keeps (so it is not saved again when the run ends)."""
    if "graph_input" in run_input:
        return run_input["graph_input"]
    from langchain_core.messages import HumanMessage

    from engine.chat_messages import messages_from_openai

    if run_input.get("messages"):
        return {"messages": messages_from_openai(run_input["messages"])}
    return {"messages": [HumanMessage(run_input["message"], id=message_id)] if run_input.get("message") else []}


def graph_stream_run(name: str, *, ctx: RunContext, graph_input: Any, checkpointer, thread_id: str,
                     resume: dict | None = None, from_checkpoint: bool = False, every_step: bool = True,
                     configurable: dict | None = None, context: Any = None,
                     interrupt_before=None, interrupt_after=None, booked: dict | None = None,
                     streaming: str = "classic", checkpoint_id: str | None = None,
                     stream_checkpoints: bool = False, graph_streams: list | None = None,
                     store=None, recursion_limit: int | None = None, subgraphs: bool = False,
                     command: dict | None = None) -> dict:
    """Run a registered graph to its end, or until it waits for input, on the run's thread (which serves the
    graph's hooks meanwhile). Returns the graph's final values, with `__interrupt__` (LangGraph's Interrupts)
    when it waits, or `__stopped_before__` (the nodes next) when it stopped at a static breakpoint; and under
    `__messages_usage__` the usage of each AI message a model call produced.
    `checkpoint_id`: the run goes on from that checkpoint of its thread (a new branch, as LangGraph forks).
    `streaming`: "v3" for a run of the thread protocol (LangGraph's astream_events v3, its message deltas, tools and
    subgraph lifecycles too), else the classic stream modes (values, updates, custom; and each checkpoint the graph
    saves, as its state snapshot, with `stream_checkpoints`; `graph_streams`: "messages-tuple", "messages",
    "events", the graph's own messages and astream_events, when a stream shows them: classic_stream). `store`: the
    LangGraph store its nodes are given (in place of any it was compiled with), used on the run's thread.
    `subgraphs`: a stream shows its subgraphs' parts, their values and tasks too (each under its namespace).
    `recursion_limit`: the run's config's (DEFAULT_RECURSION_LIMIT when it names none); a run past it fails as
    LangGraph's GraphRecursionError says. What the graph's own code raised ends the run as GraphRaised.
    `command`: {"resume": value}, a new run's Command(resume=…) answering the interrupt()s its thread's state holds
    (a run that waited on them was cancelled)."""
    from langgraph.errors import GraphRecursionError
    from langgraph.types import Command

    from engine.run_store import StoreOnRunThread

    run_thread = RunThread()
    accounting = GraphAccounting(ctx, run_thread)
    accounting.usage_by_message.update(booked or {})  # a resumed run's messages from before its pause
    config = {"configurable": {**(configurable or {}), "thread_id": thread_id,
                               **({"checkpoint_id": checkpoint_id} if checkpoint_id else {})},
              "callbacks": [accounting], "recursion_limit": recursion_limit or DEFAULT_RECURSION_LIMIT}
    outcome: dict = {}

    async def drive() -> None:
        graph = await graph_build(name, config=config)
        compiled = graph.copy(update={"checkpointer": checkpointer, **(
            {"store": StoreOnRunThread(store, run_thread, accounting)} if store is not None else {})})
        run_input = graph_input
        if resume is not None:
            pending = {i.id for i in (await compiled.aget_state(config)).interrupts}
            answer = resume if (len(resume) != 1 or pending & set(resume)) else next(iter(resume.values()))
            run_input = Command(resume=answer)
        elif command is not None:
            run_input = Command(resume=command["resume"])
        elif from_checkpoint:
            run_input = None
        kwargs = {"durability": "sync" if every_step else "exit"}
        if context is not None:
            kwargs["context"] = context
        if interrupt_before:
            kwargs["interrupt_before"] = interrupt_before
        if interrupt_after:
            kwargs["interrupt_after"] = interrupt_after
        protocol = ProtocolEvents(classic=streaming != "v3", subgraphs=subgraphs and streaming != "v3")
        if streaming == "v3":
            # LangGraph's own protocol stream: values, messages, lifecycle, tools (agents that add them), and the
            # graph's updates and custom parts (their transformers added unless the graph compiled them in).
            from langgraph.stream import CustomTransformer, UpdatesTransformer

            present = set(compiled.stream_transformers)
            extra = [t for t in (UpdatesTransformer, CustomTransformer) if t not in present]
            stream = await compiled.astream_events(run_input, config, version="v3", transformers=extra, **kwargs)
            async for event in stream:
                for method, namespace, data in protocol.kept(event):
                    run_thread.call(ctx.hooks.graph_streamed, method, namespace, data)
        else:  # the stream modes of the classic run streams
            modes = [*CLASSIC_MODES, "checkpoints"] if stream_checkpoints else list(CLASSIC_MODES)
            if subgraphs:  # its subgraphs' tasks (its own are the run's node events)
                modes.append("tasks")
            if {"messages-tuple", "messages"} & set(graph_streams or ()):
                modes.append("messages")
            async for method, namespace, data in classic_stream(compiled, run_input, config, modes=modes,
                                                                events="events" in (graph_streams or ()),
                                                                protocol=protocol, **kwargs):
                run_thread.call(ctx.hooks.graph_streamed, method, namespace, data)
        latest = {**config, "configurable": {k: v for k, v in config["configurable"].items() if k != "checkpoint_id"}}
        state = await compiled.aget_state(latest)  # the thread's state now (a branch's head, when it forked)
        outcome["values"] = dict(state.values or {})
        outcome["interrupts"] = list(state.interrupts)
        outcome["next"] = list(state.next)

    loop_task: dict = {}

    def loop_main() -> None:
        try:
            loop = asyncio.new_event_loop()
            loop_task["loop"] = loop
            try:
                loop_task["task"] = loop.create_task(drive())
                loop.run_until_complete(loop_task["task"])
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the run's thread
            outcome["error"] = exc
        finally:
            run_thread.finished()

    def idle() -> None:  # a graph that neither streams nor calls a model still stops when cancelled or late
        try:
            ctx.checkpoint()
        except RunError as exc:
            outcome.setdefault("stopped", exc)
            loop, task = loop_task.get("loop"), loop_task.get("task")
            if loop is not None and task is not None:
                loop.call_soon_threadsafe(task.cancel)

    worker = threading.Thread(target=loop_main, name="chatter-graph", daemon=True)
    worker.start()
    run_thread.serve(idle=idle)
    worker.join()
    error = outcome.get("error")
    if isinstance(error, asyncio.CancelledError) and "stopped" in outcome:
        raise outcome["stopped"]
    if isinstance(error, GraphRecursionError):
        ctx.hooks.limit_exceeded("recursion_limit", config["recursion_limit"])
        raise LimitExceeded("recursion_limit", config["recursion_limit"], message=str(error), raised=error) from None
    if isinstance(error, Exception) and not isinstance(error, RunError):
        logger.warning("registered graph %r raised", name, exc_info=error)
        raise GraphRaised(error) from error
    if error is not None:
        raise error
    # A cancel (or the deadline) that came during the graph's last step, a model call not streamed with no node
    # after it, stops the run as at a node's start: else only an idle check within that call would have seen it.
    ctx.checkpoint()
    values = outcome["values"]
    if outcome["interrupts"]:
        values["__interrupt__"] = outcome["interrupts"]
    elif outcome["next"]:
        values[STOPPED_BEFORE] = outcome["next"]
    values[MESSAGES_USAGE] = accounting.usage_by_message
    return values


def python_graph_invoke(node: Node, messages: list[BaseMessage], ctx: RunContext) -> list[BaseMessage]:
    """A python_graph node of a Chatter graph: the registered graph run on the turn's messages, as one node;
    returns the messages it added."""
    graph = graph_load(node.config["graph"])
    sent = [message.model_copy(update={"id": message.id or f"chatter-input-{index}"})
            for index, message in enumerate(messages)]
    result = graph.invoke({"messages": sent}, config={
        "callbacks": [GraphAccounting(ctx, None, node=node)], "recursion_limit": MAX_STEPS})
    known = {message.id for message in sent}
    return [message for message in (result or {}).get("messages") or []
            if isinstance(message, BaseMessage) and message.id not in known]
