"""Python graphs of your own (CHATTER_GRAPHS: LangGraph graphs, compiled or factories) run as they are
(docs/api/langgraph.md#your-own-python-graphs).

A registered graph's run executes the graph itself (`graph_stream_run`), its thread's state checkpointed on
Chatter's checkpointer. Nothing wraps it: the run's rows and events come from LangChain's callbacks (a node per
top-level task, each chat-model call accounted from its own `usage_metadata`) and LangGraph's stream (`values`,
`updates`, `custom`). The graph runs on an event loop of its own thread; whatever touches the database runs on the
run's own thread, which serves the loop's and the callbacks' requests until the graph ends (RunThread). A
`python_graph` node inside a Chatter graph runs a registered graph as one node (`python_graph_invoke`).
"""
from __future__ import annotations

import asyncio
import inspect
import queue
import threading
import time
from concurrent.futures import Future
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage

from core.errors import InvalidInput, RunError
from core.money import usd
from workflows.engine.graph import Node
from workflows.engine.graph_registry import factory_arguments, is_factory, registered_target
from workflows.engine.hooks import CallStarted, RetrievalRequest
from workflows.engine.retrieval import collections_retrieve
from workflows.engine.runtime import RunContext
from workflows.engine.tool_reservations import ToolReservations
from workflows.engine.tools import MCP_SERVER_METADATA
from workflows.engine.usage import estimate_prompt_tokens, streamed_so_far, usage_from_message

MAX_STEPS = 100
MESSAGES_USAGE = "__messages_usage__"  # in a registered graph run's final state: each AI message's model call
# In a registered graph run's final state when it stopped at a static breakpoint: the nodes that run next. The run
# ends (as LangGraph's server ends it, `success`); its thread waits there, `interrupted`, until a run goes on.
STOPPED_BEFORE = "__stopped_before__"
NODE_TYPE = "graph_node"  # a node of a registered graph, as its node rows name their type
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


class RunThread:
    """The run's own thread serving calls made on other threads (the graph's event loop, LangChain's callback
    executors): the database is touched on one thread, in the order the calls come."""

    _DONE = object()

    def __init__(self):
        self.ident = threading.get_ident()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()

    def call(self, fn: Callable, *args, **kwargs):
        """fn(*args, **kwargs) on the run's thread; returns its result or raises its exception."""
        if threading.get_ident() == self.ident:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        """fn(*args, **kwargs) queued for the run's thread: the Future of its result."""
        done: Future = Future()
        self._calls.put((fn, args, kwargs, done))
        return done

    def finished(self) -> None:
        self._calls.put(self._DONE)

    def serve(self, *, idle: Callable[[], None], idle_s: float = 0.5) -> None:
        """Run the calls as they come until `finished`; `idle` is called whenever none came for `idle_s`."""
        while True:
            try:
                item = self._calls.get(timeout=idle_s)
            except queue.Empty:
                idle()
                continue
            if item is self._DONE:
                return
            fn, args, kwargs, done = item
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller, on its thread
                done.set_exception(exc)


def _node(name: str) -> Node:
    return Node(id=name, type=NODE_TYPE, config={}, label=name)


class GraphAccounting(BaseCallbackHandler):
    """LangChain's callbacks of a registered graph's run turned into the run's hooks, on the run's thread."""

    raise_error = True  # a cancel or a limit raised at a token or node boundary must stop the graph

    def __init__(self, ctx: RunContext, run_thread: RunThread | None, *, node: Node | None = None):
        self.ctx, self.run_thread = ctx, run_thread
        self.fixed_node = node  # a python_graph node of a Chatter graph: everything is that node's
        self.root: UUID | None = None
        self.task_of: dict[UUID, UUID] = {}  # every run seen inside a task → the task's (top-level node's) run id
        self.tasks: dict[UUID, dict] = {}  # open task → {"node", "opened", "calls", "ending"}
        self.calls: dict[UUID, dict] = {}
        self.tools: dict[UUID, dict] = {}
        self.reservations = ToolReservations(ctx)  # priced MCP calls in flight, held to the run's budgets
        self.usage_by_message: dict[str, Any] = {}  # an AI message's id → the usage of the call that produced it
        self._lock = threading.Lock()

    # --- which node a callback belongs to ----------------------------------------------------------------
    def _task(self, run_id: UUID, parent_run_id: UUID | None) -> UUID | None:
        with self._lock:
            task = self.task_of.get(parent_run_id) if parent_run_id is not None else None
            if task is not None:
                self.task_of[run_id] = task
            return task

    def _call(self, fn: Callable, *args) -> Any:
        """fn on the run's thread (with no RunThread, a python_graph node's sync run: where the callback is)."""
        return self.run_thread.call(fn, *args) if self.run_thread is not None else fn(*args)

    def _in_node(self, task: UUID | None, fn: Callable[[Node], Any]) -> Any:
        """fn(node) on the run's thread with the task's node row as the recorder's open one."""
        if self.fixed_node is not None:
            return self._call(fn, self.fixed_node)
        opened = self.tasks.get(task) if task is not None else None

        def focused():
            if opened is not None and opened["opened"] is not None:
                self.ctx.hooks.node_focus(opened["opened"])
            return fn(opened["node"] if opened is not None else _node("graph"))
        return self._call(focused)

    def prompt_for(self, parent_run_id: UUID | None, ref: dict, variables: dict):
        """A stored prompt fetched by a node of the graph (graph_prompts.prompt_fetch), with that node's row open,
        so the calls it makes next record the version."""
        return self._in_node(self.task_of.get(parent_run_id), lambda node: self.ctx.hooks.prompt(node, ref, variables))

    # --- nodes ---------------------------------------------------------------------------------------------
    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None,
                       **kwargs) -> None:
        if self.root is None and parent_run_id is None:
            self.root = run_id
            return
        if self.fixed_node is not None or parent_run_id != self.root:
            self._task(run_id, parent_run_id)
            return
        name = kwargs.get("name") or (metadata or {}).get("langgraph_node") or "node"
        if name.startswith("__") or "langsmith:hidden" in (tags or []):
            return
        node = _node(name)
        task = {"node": node, "opened": None, "calls": 0, "ending": None}
        with self._lock:
            self.task_of[run_id] = run_id
            self.tasks[run_id] = task

        def start():
            self.ctx.checkpoint()
            self.ctx.hooks.node_started(node)
            task["opened"] = self.ctx.hooks.node_focus(None)
        self._call(start)

    def _task_end(self, run_id: UUID, *, status: str, output: dict, error: str = "", paused: bool = False) -> None:
        task = self.tasks.get(run_id)
        if task is None or task["opened"] is None:
            return
        if task["calls"] > 0:  # a model call of it has not ended yet: the node ends with its last call
            task["ending"] = {"status": status, "output": output, "error": error, "paused": paused}
            return
        self.tasks.pop(run_id, None)

        def end():
            self.ctx.hooks.node_focus(task["opened"])
            if paused:
                self.ctx.hooks.node_paused(task["node"])
            else:
                self.ctx.hooks.node_finished(task["node"], status=status, output=output, error=error)
        self._call(end)

    def on_chain_end(self, outputs, *, run_id, **kwargs) -> None:
        if run_id in self.tasks:
            self._task_end(run_id, status="completed", output=_summary(outputs))

    def on_chain_error(self, error, *, run_id, **kwargs) -> None:
        if run_id not in self.tasks:
            return
        from langgraph.errors import GraphBubbleUp

        if isinstance(error, GraphBubbleUp):  # interrupt(): the node waits for an answer, and runs again on it
            self._task_end(run_id, status="running", output={}, paused=True)
        else:
            self._task_end(run_id, status="failed", output={},
                           error=str(error) if isinstance(error, RunError) else f"{type(error).__name__}: {error}")

    # --- model calls -----------------------------------------------------------------------------------------
    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, metadata=None,
                            **kwargs) -> None:
        task = self._task(run_id, parent_run_id)
        metadata = metadata or {}
        prompt = messages[0] if messages else []
        call = {"provider": str(metadata.get("ls_provider") or "unknown"),
                "model": str(metadata.get("ls_model_name") or "unknown"), "prompt": prompt,
                "started": time.monotonic(), "text": "", "task": task}
        self.calls[run_id] = call
        if task in self.tasks:
            self.tasks[task]["calls"] += 1

        def started(node):
            self.ctx.hooks.model_call_started(node, CallStarted(
                call["provider"], call["model"], estimate_prompt_tokens(prompt),
                lambda: streamed_so_far(AIMessage(call["text"])),
                temperature=metadata.get("ls_temperature")))
            self.ctx.checkpoint()
        self._in_node(task, started)

    def on_llm_new_token(self, token, *, run_id, **kwargs) -> None:
        call = self.calls.get(run_id)
        if call is None or not isinstance(token, str) or not token:
            return
        call["text"] += token

        message = getattr(kwargs.get("chunk"), "message", None)

        def streamed(node):
            self.ctx.partial_text += token
            self.ctx.hooks.token(node, token, message_id=getattr(message, "id", None))
            self.ctx.checkpoint()
        self._in_node(call["task"], streamed)

    def on_llm_end(self, response, *, run_id, **kwargs) -> None:
        call = self.calls.pop(run_id, None)
        if call is None:  # a completion model, not a chat model: not one this accounting knows
            return
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        message = getattr(generation, "message", None) or AIMessage(call["text"])
        usage = usage_from_message(message, prompt=call["prompt"])
        reported = (message.response_metadata or {}).get("model_name") or call["model"]
        whole = message.content if not call["text"] and isinstance(message.content, str) else ""

        def recorded(node):
            if whole:  # a reply given whole (not streamed) reaches the run's watchers as one token, as it streams
                self.ctx.partial_text += whole
                self.ctx.hooks.token(node, whole, message_id=message.id)
            if message.id:  # booked on the message before the call counts: a limit it passes still leaves it there
                self.usage_by_message[message.id] = {"provider": call["provider"], "model": reported}
            recorded_call = self.ctx.call_recorded(node, provider=call["provider"], reported_model=reported,
                                                   requested_model=call["model"], usage=usage,
                                                   started=call["started"], message_id=message.id,
                                                   finish_reason=(message.response_metadata or {}).get(
                                                       "finish_reason") or "")
            if message.id:
                self.usage_by_message[message.id]["usage"] = recorded_call.usage
        self._in_node(call["task"], recorded)
        self._call_ended(call["task"])

    def on_llm_error(self, error, *, run_id, **kwargs) -> None:
        call = self.calls.pop(run_id, None)
        if call is not None:
            self._call_ended(call["task"])

    def _call_ended(self, task: UUID | None) -> None:
        opened = self.tasks.get(task) if task is not None else None
        if opened is None:
            return
        opened["calls"] -= 1
        if opened["calls"] == 0 and opened["ending"] is not None:
            self._task_end(task, **opened["ending"])

    # --- tools ------------------------------------------------------------------------------------------------
    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, inputs=None, **kwargs) -> None:
        task = self._task(run_id, parent_run_id)
        metadata = kwargs.get("metadata") or {}
        self.tools[run_id] = {"tool": (serialized or {}).get("name") or kwargs.get("name") or "tool",
                              "arguments": inputs if isinstance(inputs, dict) else {"input": input_str},
                              "started": time.monotonic(), "task": task, "call_id": kwargs.get("tool_call_id"),
                              "server_id": metadata.get(MCP_SERVER_METADATA)}
        self._in_node(task, lambda node: self.ctx.claim_tool_calls(1, node_limit=self.ctx.config["max_tool_calls"]))

    def _tool_ended(self, run_id, *, result: str, ok: bool, error: str) -> None:
        tool = self.tools.pop(run_id, None)
        if tool is None:
            return
        # An MCP tool's call is charged its price when it answered (its server named in its metadata).
        cost = self.ctx.hooks.tool_price(tool["tool"]) if ok and tool["server_id"] else Decimal("0")
        self.ctx.tool_cost_add(cost)

        def recorded(node):  # its cost counts as its reservation ends, in one step on the run's thread
            self.reservations.release(tool["call_id"])
            self.ctx.hooks.tool_called(
                node, tool=tool["tool"], arguments=tool["arguments"], result=result, ok=ok, error=error,
                duration_ms=int((time.monotonic() - tool["started"]) * 1000), server_id=tool["server_id"], cost=cost)
        self._in_node(tool["task"], recorded)

    async def tool_reserve(self, tool: str, call_id: str | None) -> str | None:
        """Before an MCP tool's call (tools.langchain, on the graph's loop): None when it may be made, else why not
        (ToolReservations), decided on the run's thread within the node that makes the call."""
        task = next((t["task"] for t in list(self.tools.values()) if t["call_id"] == call_id), None)
        return await asyncio.to_thread(self._in_node, task, lambda node: self.reservations.reserve(tool, call_id))

    def on_tool_end(self, output, *, run_id, **kwargs) -> None:
        content = getattr(output, "content", output)
        if isinstance(content, list):  # content blocks (an MCP tool's, through langchain-mcp-adapters): their text
            content = "\n".join(b["text"] if isinstance(b, dict) and "text" in b else str(b) for b in content)
        text = content if isinstance(content, str) else str(content)
        if getattr(output, "status", "success") == "error":  # a ToolMessage of a tool that failed and said so
            self._tool_ended(run_id, result="", ok=False, error=text)
        else:
            self._tool_ended(run_id, result=text, ok=True, error="")

    def on_tool_error(self, error, *, run_id, **kwargs) -> None:
        self._tool_ended(run_id, result="", ok=False, error=f"{type(error).__name__}: {error}")

    # --- knowledge collections (workflows.graph_knowledge) --------------------------------------------------------
    def collections_search(self, run_id: UUID, request: RetrievalRequest) -> list[dict]:
        """A retriever's search (its run `run_id`), done by the run in the node it is part of: recorded there."""
        return self._in_node(self.task_of.get(run_id), lambda node: collections_retrieve(node, self.ctx, request))

    # --- the store's index (workflows.engine.run_store) -----------------------------------------------------------
    def store_embed(self, run_id: UUID | None) -> Callable[[str, list[str], int | None], list[list[float]]]:
        """How the store embeds for the LangChain run `run_id` (a node, or inside one): each request an LLM call of
        that node (of the graph, when it is none), on the run's thread."""
        task = self.task_of.get(run_id) if run_id is not None else None

        def embed(model: str, texts: list[str], dimensions: int | None) -> list[list[float]]:
            provider, _, name = model.partition("/")
            return self._in_node(task, lambda node: self.ctx.embed(node, texts, dimensions=dimensions,
                                                                   provider=provider, model=name))
        return embed

    # --- anything else inside a task keeps its task -------------------------------------------------------------
    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs) -> None:
        self._task(run_id, parent_run_id)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, **kwargs) -> None:
        self._task(run_id, parent_run_id)


def _summary(outputs) -> dict:
    """A node's result as its row keeps it (size-capped by the recorder)."""
    data = as_json(outputs)
    return data if isinstance(data, dict) else {"result": data}


def booked_as_json(booked: dict) -> dict:
    """Each AI message's call usage (GraphAccounting.usage_by_message) as JSON, kept while a run waits for input
    (booked_from_json reads it back when it goes on)."""
    return {message_id: {"provider": entry["provider"], "model": entry["model"],
                         **({"usage": {**as_json(vars(entry["usage"])), "cost": usd(entry["usage"].cost)}}
                            if "usage" in entry else {})}
            for message_id, entry in booked.items()}


def booked_from_json(kept: dict | None) -> dict:
    from decimal import Decimal

    from workflows.engine.usage import Usage

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

    from workflows.engine.chat_messages import messages_from_openai

    if run_input.get("messages"):
        return {"messages": messages_from_openai(run_input["messages"])}
    return {"messages": [HumanMessage(run_input["message"], id=message_id)] if run_input.get("message") else []}


def graph_stream_run(name: str, *, ctx: RunContext, graph_input: Any, checkpointer, thread_id: str,
                     resume: dict | None = None, from_checkpoint: bool = False, every_step: bool = True,
                     configurable: dict | None = None, context: Any = None,
                     interrupt_before=None, interrupt_after=None, booked: dict | None = None,
                     streaming: str = "classic", checkpoint_id: str | None = None,
                     stream_checkpoints: bool = False, graph_streams: list | None = None,
                     store=None) -> dict:
    """Run a registered graph to its end, or until it waits for input, on the run's thread (which serves the
    graph's hooks meanwhile). Returns the graph's final values, with `__interrupt__` (LangGraph's Interrupts)
    when it waits, or `__stopped_before__` (the nodes next) when it stopped at a static breakpoint; and under
    `__messages_usage__` the usage of each AI message a model call produced.
    `checkpoint_id`: the run goes on from that checkpoint of its thread (a new branch, as LangGraph forks).
    `streaming`: "v3" for a run of the thread protocol (LangGraph's astream_events v3, its message deltas, tools and
    subgraph lifecycles too), else the classic stream modes (values, updates, custom; and each checkpoint the graph
    saves, as its state snapshot, with `stream_checkpoints`; `graph_streams`: "messages-tuple", "events", the
    graph's own message chunks and astream_events, when a stream shows them: classic_stream). `store`: the
    LangGraph store its nodes are given (in place of any it was compiled with), used on the run's thread."""
    from langgraph.errors import GraphRecursionError
    from langgraph.types import Command

    from workflows.engine.graph_streams import CLASSIC_MODES, ProtocolEvents, classic_stream
    from workflows.engine.run_store import StoreOnRunThread

    run_thread = RunThread()
    accounting = GraphAccounting(ctx, run_thread)
    accounting.usage_by_message.update(booked or {})  # a resumed run's messages from before its pause
    config = {"configurable": {**(configurable or {}), "thread_id": thread_id,
                               **({"checkpoint_id": checkpoint_id} if checkpoint_id else {})},
              "callbacks": [accounting], "recursion_limit": MAX_STEPS}
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
        elif from_checkpoint:
            run_input = None
        kwargs = {"durability": "sync" if every_step else "exit"}
        if context is not None:
            kwargs["context"] = context
        if interrupt_before:
            kwargs["interrupt_before"] = interrupt_before
        if interrupt_after:
            kwargs["interrupt_after"] = interrupt_after
        protocol = ProtocolEvents(classic=streaming != "v3")
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
            if "messages-tuple" in (graph_streams or ()):
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
        ctx.hooks.limit_exceeded("max_steps", MAX_STEPS)
        from core.errors import LimitExceeded
        raise LimitExceeded("max_steps", MAX_STEPS) from None
    if error is not None:
        raise error
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
