"""Turns a validated Graph into a LangGraph StateGraph and runs it.

Every node is wrapped the same way: checkpoint (cancel, timeout), hooks.node_started, the behaviour,
hooks.node_finished. Routing follows docs/usage.md#the-graph-format: the first outgoing edge whose condition holds,
unless edges marked `parallel` hold: then all of those, run together in one step; a failed node may only go to an
error_handler node, else the run fails.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from langchain_core.messages import HumanMessage

from engine.chat_messages import messages_from_openai
from engine.errors import LimitExceeded, NodeFailed, RunCancelled, RunError
from engine.graph import Graph, Node
from engine.nodes import (
    BEHAVIOURS,
    HandlerStopped,
    RunState,
    condition_context,
)
from engine.runtime import RunContext

MAX_STEPS = 1000
_CACHE_SIZE = 128
_cache: OrderedDict[str, Any] = OrderedDict()
_cache_lock = threading.Lock()


def _node_runner(graph: Graph, node: Node):
    from langgraph.errors import GraphBubbleUp  # called while compiling, when LangGraph is loaded

    behaviour = BEHAVIOURS[node.type]
    handled = any(graph.node(edge.target).type == "error_handler" for edge in graph.outgoing(node.id))

    def run(state: RunState, config) -> dict:
        ctx: RunContext = config["configurable"]["chatter"]
        ctx.checkpoint()
        ctx.hooks.node_started(node)
        try:
            outcome = behaviour(node, state, ctx, graph)
        except GraphBubbleUp:  # interrupt(): the node waits for an answer, and runs again when it comes
            ctx.hooks.node_paused(node)
            raise
        except (LimitExceeded, RunCancelled) as exc:
            ctx.hooks.node_finished(node, status="failed", output={}, error=str(exc), error_type=exc.error_type)
            raise
        except Exception as exc:  # noqa: BLE001 - a node's failure is recorded, then routed or fatal
            message = str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"
            ctx.hooks.node_finished(node, status="failed", output={}, error=message,
                                    error_type=exc.error_type if isinstance(exc, RunError) else NodeFailed.error_type)
            if handled and not isinstance(exc, HandlerStopped):
                return {"errors": [*(state.get("errors") or []), {"node_id": node.id, "message": message}]}
            if isinstance(exc, RunError):
                raise
            raise NodeFailed(f"node {node.id!r} failed: {message}") from exc
        ctx.hooks.node_finished(node, status="skipped" if outcome.skipped else "completed", output=outcome.output)
        return outcome.update

    return run


def _router(graph: Graph, node: Node):
    from langgraph.graph import END  # called while compiling, when LangGraph is loaded

    edges = graph.outgoing(node.id)

    def route(state: RunState, config) -> str:
        ctx: RunContext = config["configurable"]["chatter"]
        errors = state.get("errors") or []
        failed = bool(errors) and errors[-1]["node_id"] == node.id
        if node.type == "error_handler" and state.get("retry_target"):
            return state["retry_target"]
        context = condition_context(graph, state, ctx)
        result = (state.get("conditions") or {}).get(node.id)
        first, together = None, []
        for edge in edges:
            if failed and graph.node(edge.target).type != "error_handler":
                continue
            if edge.branch is not None and edge.branch != ("true" if result else "false"):
                continue
            if edge.parsed is None or edge.parsed.evaluate(context):
                if not edge.parallel:
                    first = first or edge.target
                elif edge.target not in together:
                    together.append(edge.target)
        if together:  # parallel branches: every parallel edge that holds, run at once (one LangGraph step)
            return together
        if first is not None:
            return first
        if failed:
            raise NodeFailed(f"node {node.id!r} failed: {errors[-1]['message']}")
        return END

    return route


def graph_compile(graph: Graph, *, checkpointer=None):
    """The compiled LangGraph for a graph, cached by its normalized form and saver (compiling costs milliseconds)."""
    # Imported here, not at the top: LangGraph takes most of a second to import, and commands such as
    # `manage.py chat --help` (or the admin) load this module without ever compiling a graph.
    from langgraph.graph import START, StateGraph

    key = graph.key + f"|{id(checkpointer)}"
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    builder = StateGraph(RunState)
    for node in graph.nodes:
        builder.add_node(node.id, _node_runner(graph, node))
        builder.add_conditional_edges(node.id, _router(graph, node))
    builder.add_edge(START, graph.entry)
    compiled = builder.compile(checkpointer=checkpointer)
    with _cache_lock:
        _cache[key] = compiled
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


def graph_run(graph: Graph, *, ctx: RunContext, message: str | None = None, variables: dict | None = None,
              messages: list[dict] | None = None, checkpointer=None, thread_id: str | None = None,
              resume: dict | None = None, from_checkpoint: bool = False, every_step: bool = True,
              carried: bool = False, checkpoint_id: str | None = None, message_id: str | None = None,
              run_id: str | None = None, stream_checkpoints: bool = False, interrupt_before=None,
              interrupt_after=None, recursion_limit: int | None = None) -> dict:
    """Run the graph to its end, or until it waits for input; returns the final state (then with `__interrupt__`:
    LangGraph's Interrupts, each a question's value and id). Raises RunError subclasses when the run ends early.
    `messages` (OpenAI-shaped, as the gateway takes them) are the run's input messages instead of `message`.
    With a `checkpointer` (a LangGraph saver), the state is saved under `thread_id` after each step
    (`every_step`), else when the run pauses for input and when it ends; `resume` (interrupt id → answer)
    continues a paused run from its last checkpoint, and `from_checkpoint` a run whose process died.
    `carried`: the thread's state goes on from run to run (a conversation's thread): the input's messages are added
    to it, this turn's own channels start anew, and with `checkpoint_id` the run goes on from that checkpoint
    instead of the latest (a new branch, as LangGraph forks); `message_id` names the input message. `run_id`: in
    each checkpoint's metadata, as LangGraph's server puts it. `stream_checkpoints`: each checkpoint saved goes to
    the run's hooks as LangGraph's `checkpoints` stream part. `interrupt_before` / `interrupt_after` (node ids, or
    "*"): static breakpoints; a run stopped at one returns with a breakpoint's question under `__interrupt__`
    (_breakpoint_question), and its resume goes on from the checkpoint without an answer. `recursion_limit`: the
    supersteps the run may take, as LangGraph counts them (MAX_STEPS when it names none); a run past it fails as
    LangGraph's GraphRecursionError says."""
    from langgraph.errors import GraphRecursionError
    from langgraph.types import Command

    state: RunState | None = {
        "messages": messages_from_openai(messages) if messages else [HumanMessage(message, id=message_id)]
        if message else [],
        "variables": dict(variables or {}),
        "errors": [],
    }
    configurable = {"chatter": ctx, **({"thread_id": thread_id} if checkpointer is not None else {}),
                    **({"run_id": run_id} if run_id else {})}
    compiled = graph_compile(graph, checkpointer=checkpointer)
    if carried and resume is None and not from_checkpoint:
        if checkpoint_id:
            configurable["checkpoint_id"] = checkpoint_id
        state = _turn_input(compiled, state, ctx=ctx, config={"configurable": configurable}) if (
            state["messages"] or not checkpoint_id) else None  # none: the run goes on from the checkpoint as it is
    paused_at = None
    if resume is not None and checkpointer is not None:
        paused_at = compiled.get_state({"configurable": configurable})
        pending = {interrupt.id for interrupt in paused_at.interrupts}
        if resume and all(key.startswith(_BREAKPOINT) for key in resume):
            resume = None  # stopped at a static breakpoint: it goes on from the checkpoint, with nothing to answer
        elif len(resume) == 1 and not pending & set(resume):
            # The state was updated since the question (LangGraph's update_state: a new checkpoint, from which the
            # node asks again under a new id): the one answer goes to the interrupt the run meets first.
            resume = next(iter(resume.values()))
    breakpoints = {"interrupt_before": interrupt_before, "interrupt_after": interrupt_after}
    options = {name: value for name, value in breakpoints.items() if value} if checkpointer is not None else {}
    if checkpointer is not None:
        options["durability"] = "sync" if every_step else "exit"
    run_input = Command(resume=resume) if resume is not None else None if (
        from_checkpoint or paused_at is not None) else state
    config = {"configurable": configurable, "recursion_limit": recursion_limit or MAX_STEPS}
    try:
        if stream_checkpoints and checkpointer is not None:
            result = _streamed(compiled, run_input, config=config, ctx=ctx, options=options)
        else:
            result = compiled.invoke(run_input, config=config, **options)
    except GraphRecursionError as exc:
        if recursion_limit:
            ctx.hooks.limit_exceeded("recursion_limit", recursion_limit)
            raise LimitExceeded("recursion_limit", recursion_limit, message=str(exc), raised=exc) from None
        ctx.hooks.limit_exceeded("max_steps", MAX_STEPS)
        raise LimitExceeded("max_steps", MAX_STEPS) from None
    if "interrupt_before" in options or "interrupt_after" in options:
        stopped = compiled.get_state({"configurable": {k: v for k, v in configurable.items() if k != "checkpoint_id"}})
        if stopped.next and not stopped.interrupts:
            result = {**(result or {}), "__interrupt__": [_breakpoint_question(stopped)]}
    return result


def _breakpoint_question(snapshot):
    """A run stopped at a static breakpoint as the question a paused run waits on (LangGraph's Interrupt): no
    prompt, no schema; its id names the checkpoint it stopped at, and `breakpoint` the nodes that run next."""
    from langgraph.types import Interrupt

    return Interrupt(value={"node_id": snapshot.next[0], "prompt": "", "schema": None,
                            "breakpoint": list(snapshot.next)}, id=_breakpoint_id(snapshot))


_BREAKPOINT = "breakpoint-"


def _breakpoint_id(snapshot) -> str:
    return _BREAKPOINT + str(snapshot.config["configurable"].get("checkpoint_id"))


def _streamed(compiled, run_input, *, config: dict, ctx: RunContext, options: dict) -> dict:
    """compiled.invoke's result, streamed with LangGraph's `checkpoints` mode: each checkpoint saved goes to the
    run's hooks (its config without Chatter's run context, as the thread's history shows it)."""
    from engine.graph_streams import as_json

    latest, interrupts = None, []
    for mode, part in compiled.stream(run_input, config, stream_mode=["updates", "values", "checkpoints"],
                                      **options):
        if mode == "updates" and isinstance(part, dict) and part.get("__interrupt__"):
            interrupts.extend(part["__interrupt__"])
        elif mode == "values":
            latest = part
        elif mode == "checkpoints":
            ctx.hooks.graph_streamed("checkpoints", [], as_json(_without_run_context(part)))
    return {**(latest or {}), "__interrupt__": interrupts} if interrupts else latest


def _without_run_context(part: dict) -> dict:
    def public(config):
        if not config:
            return config
        return {**config, "configurable": {k: v for k, v in config["configurable"].items() if k != "chatter"}}

    return {**part, "config": public(part.get("config")), "parent_config": public(part.get("parent_config"))}


SEEDED_HISTORY = 1000  # a conversation's messages a thread's state begins with, at most


def _turn_input(compiled, state: RunState, *, ctx: RunContext, config: dict) -> RunState:
    """A turn's input to a thread's state that goes on: its messages after the state's (whose count marks where
    the turn begins), the turn's own channels empty again. A thread with no state yet (a conversation that had
    turns before it kept one) begins with the conversation's messages."""
    from langgraph.types import Overwrite

    before = compiled.get_state(config)
    earlier = list((before.values or {}).get("messages") or [])
    if before.created_at is None:
        earlier = ctx.hooks.history(SEEDED_HISTORY)
        state = {**state, "messages": [*earlier, *state["messages"]]}
    return {**state, "turn_start": len(earlier), "history": [], "documents": [], "retry_target": None,
            "conditions": Overwrite({}), "loops": Overwrite({}), "retries": Overwrite({})}
