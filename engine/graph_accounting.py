"""A registered graph's run accounted (python_graphs): LangChain's callbacks turned into the run's hooks, a node per
top-level task, each chat-model call accounted from its own `usage_metadata`, each tool call priced and held to the
run's budgets; all of it on the run's own thread (RunThread), which serves the graph's event loop and LangChain's
callback executors."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from decimal import Decimal
from typing import Any, Callable
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage

from engine.chat_messages import content_text
from engine.errors import RunError
from engine.graph import Node
from engine.graph_streams import as_json
from engine.hooks import CallStarted, RetrievalRequest
from engine.retrieval import collections_retrieve
from engine.runtime import RunContext
from engine.tool_reservations import ToolReservations
from engine.tools import MCP_SERVER_METADATA
from engine.usage import estimate_prompt_tokens, streamed_so_far, usage_from_message

NODE_TYPE = "graph_node"  # a node of a registered graph, as its node rows name their type


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

    def _task_end(self, run_id: UUID, *, status: str, output: dict, error: str = "", error_type: str = "",
                  paused: bool = False) -> None:
        task = self.tasks.get(run_id)
        if task is None or task["opened"] is None:
            return
        if task["calls"] > 0:  # a model call of it has not ended yet: the node ends with its last call
            task["ending"] = {"status": status, "output": output, "error": error, "error_type": error_type,
                              "paused": paused}
            return
        self.tasks.pop(run_id, None)

        def end():
            self.ctx.hooks.node_focus(task["opened"])
            if paused:
                self.ctx.hooks.node_paused(task["node"])
            else:
                self.ctx.hooks.node_finished(task["node"], status=status, output=output, error=error,
                                             error_type=error_type)
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
            # As the run classifies what ends it (workflows.runner): a RunError's type, anything else internal_error.
            run_error = isinstance(error, RunError)
            self._task_end(run_id, status="failed", output={},
                           error=str(error) if run_error else f"{type(error).__name__}: {error}",
                           error_type=error.error_type if run_error else "internal_error")

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
            # Its price is read now, before the call goes out: its end books it reading nothing (a database out of
            # reach by then loses no call made).
            call["target"] = self.ctx.call_target(call["provider"], call["model"])
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
        whole = content_text(message.content) if not call["text"] else ""

        def recorded(node):
            if whole:  # a reply given whole (not streamed) reaches the run's watchers as one token, as it streams
                self.ctx.partial_text += whole
                self.ctx.hooks.token(node, whole, message_id=message.id)
            if message.id:  # booked on the message before the call counts: a limit it passes still leaves it there
                self.usage_by_message[message.id] = {"provider": call["provider"], "model": reported}
            recorded_call = self.ctx.call_recorded(node, target=call.get("target"), provider=call["provider"],
                                                   reported_model=reported, requested_model=call["model"], usage=usage,
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
        server_id = (kwargs.get("metadata") or {}).get(MCP_SERVER_METADATA)
        self.tools[run_id] = {"tool": (serialized or {}).get("name") or kwargs.get("name") or "tool",
                              "arguments": inputs if isinstance(inputs, dict) else {"input": input_str},
                              "started": time.monotonic(), "task": task, "call_id": kwargs.get("tool_call_id"),
                              "server_id": server_id}

        def started(node):  # `tool_start`, as a JSON workflow's tools node says it (an MCP call writes first)
            self.ctx.claim_tool_calls(1, node_limit=self.ctx.config["max_tool_calls"])
            self.ctx.hooks.tool_started(node, tool=self.tools[run_id]["tool"], call_id=self.tools[run_id]["call_id"],
                                        waits=server_id is not None)
            if server_id is not None:  # an MCP tool's: its server may be gone by the time its row is written
                self.ctx.hooks.mcp_call_started(server_id=server_id)
        self._in_node(task, started)

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
        # content blocks (an MCP tool's, through langchain-mcp-adapters): their text, an image named, not its data
        text = content_text(content) if isinstance(content, (str, list)) else str(content)
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

    # --- the store's index (engine.run_store) -----------------------------------------------------------
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
