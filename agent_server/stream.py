"""Chatter's one event feed (workflows.realtime) spoken as LangGraph's SSE stream modes
(docs/api/langgraph.md#stream-modes).

Each persisted event of a run becomes zero or more frames, numbered `<seq>-<k>` (k: the frame's place among those
the event gave), so `Last-Event-ID` resumes exactly after the last frame the client got: the feed is read again
from that seq and the frames already sent are skipped. Token frames are live only and carry no id. The first frame
is always `metadata` ({"run_id"}), the last `end`, or `error` for a run that failed or was cancelled.
"""
from __future__ import annotations

import uuid
from typing import AsyncIterator, Awaitable, Callable

from channels.db import database_sync_to_async
from langchain_core.messages import AIMessageChunk, BaseMessageChunk, messages_from_dict
from langchain_core.messages.ai import add_ai_message_chunks

from agent_server.messages import ai_message_of_run, input_as_dicts, question_interrupt, usage_metadata
from agent_server.threads import thread_values
from core.api.sse import frame
from engine.graph_streams import as_json
from workflows.events import TERMINAL_EVENTS
from workflows.models import ExecutionEvent, WorkflowExecution


GRAPH_STREAMS = ("messages-tuple", "messages", "events")  # a registered graph's own, when a stream shows them


def graph_streams_asked(modes) -> list[str]:
    """The stream modes a registered graph's run gives from the graph's own stream, not from Chatter's events:
    its messages (LangGraph's `messages`: as [chunk, metadata], or as the server's messages/partial, complete) and
    its astream_events (engine.graph_streams)."""
    return [mode for mode in GRAPH_STREAMS if mode in (modes or ())]


def graph_streams_of(execution) -> set[str]:
    """Those a run was started (or resumed) with."""
    return set((execution.input_data or {}).get("graph_streams") or ())


def parse_last_event_id(value: str | None) -> tuple[int, int] | None:
    """`<seq>-<k>` → (seq, k); anything else: start from the beginning."""
    seq, _, k = (value or "").partition("-")
    if seq.isdigit() and k.isdigit():
        return int(seq), int(k)
    return None


@database_sync_to_async
def _state(*, execution_id, conversation_id, inputs: list[dict], ended: bool, started: bool = False) -> dict:
    """The run's values: its thread's (`started`: as they were when it started, whenever the frame is made: a
    client that reads behind the run, or replays its log, sees its first values without its replies), or its
    input (and, `ended`, its answer) for a run without a thread."""
    if conversation_id is not None:
        pk = uuid.UUID(str(conversation_id))
        return thread_values(conversation_ids=[pk], at_start_of=execution_id if started else None)[pk]
    messages = input_as_dicts(inputs)
    if ended:
        messages.append(ai_message_of_run(WorkflowExecution.objects.get(pk=execution_id)))
    return {"messages": messages}


@database_sync_to_async
def _question(execution_id, interrupt_id):
    """The value a run's interrupt holds (its question as the run's row keeps it)."""
    output = WorkflowExecution.objects.filter(pk=execution_id).values_list("output_data", flat=True).first() or {}
    for question in output.get("input_required") or []:
        if question.get("interrupt_id") == interrupt_id:
            return question_interrupt(question)["value"]
    return None


@database_sync_to_async
def _still_paused(execution_id, seq) -> bool:
    """Whether the run waits now on the question at `seq` (no event came after it)."""
    return (WorkflowExecution.objects.filter(pk=execution_id, status=WorkflowExecution.Status.WAITING).exists()
            and not ExecutionEvent.objects.filter(execution_id=execution_id, seq__gt=seq).exists())


def _tool_call_fields(pieces: list[dict]) -> dict:
    """`tool_calls` and `invalid_tool_calls` of a reply's tool-call pieces (LangChain's tool_call_chunks) so far,
    as LangChain adds chunks up (as the JS SDK and agent-chat-ui merge a stream's chunks)."""
    if not pieces:
        return {"tool_calls": [], "invalid_tool_calls": []}
    first, *rest = (AIMessageChunk(content="", tool_call_chunks=[piece]) for piece in pieces)
    merged = add_ai_message_chunks(first, *rest) if rest else first
    return {"tool_calls": merged.tool_calls, "invalid_tool_calls": merged.invalid_tool_calls}


def _tool_message(data: dict) -> dict:
    """A tool's message (its `tool_called` event's) as LangChain's JSON of a ToolMessage: what the state holds."""
    return {"content": data.get("content") or "", "additional_kwargs": {}, "response_metadata": {}, "type": "tool",
            "name": data.get("tool"), "id": data["message_id"], "tool_call_id": data.get("call_id"),
            "artifact": None, "status": "success" if data.get("ok") else "error"}


async def feed_until_waiting(feed: AsyncIterator[dict], *, execution_id) -> AsyncIterator[dict]:
    """A run's feed read from its log (join): it ends at the question the run waits on now, not at one it was
    answered since (a paused, resumed run's log holds both)."""
    try:
        async for envelope in feed:
            yield envelope
            if envelope["event"] == "input_required" and await _still_paused(execution_id, envelope["seq"]):
                return
    finally:
        await feed.aclose()


class FrameMaker:
    """The frames of one run's feed for the stream modes asked for."""

    def __init__(self, *, run_id: str, thread_id: str | None, modes: list[str], inputs: list[dict],
                 native: bool = False, subgraphs: bool = False, graph_streams: set[str] = frozenset()):
        self.run_id, self.thread_id, self.modes, self.inputs = run_id, thread_id, set(modes), inputs
        self.text: dict[str, str] = {}  # the text so far of each node's message ("messages" mode)
        self.calls: dict[str, list[dict]] = {}  # the tool-call pieces so far of each node's message
        # On a thread, each node's streaming message's id in the thread's state (the model's reply's own).
        self.message_ids: dict[str, str] = {}
        # A registered graph's run: values, updates and custom are the graph's own stream (its run's events).
        self.native, self.subgraphs = native, subgraphs
        self.graph_streams = set(graph_streams) if native else set()  # modes the graph's own stream gives
        self.last_values: dict = {}
        self.open_task: dict | None = None  # the node that started last and has not ended (an interrupt's)
        self.ended_tasks: dict[str, tuple] = {}  # a registered graph's ended nodes (task, step) until their writes
        self.graph_messages: dict = {}  # a registered graph's messages so far, by id (the `messages` mode)

    def _message_id(self, node_id: str) -> str:
        return self.message_ids.get(node_id) or f"run-{self.run_id}-{node_id}"

    def _message_id_noted(self, node_id: str, data: dict) -> None:
        if self.thread_id is not None and data.get("message_id"):
            self.message_ids[node_id] = data["message_id"]

    def _meta(self, data: dict) -> dict:
        return {"run_id": self.run_id, "thread_id": self.thread_id, "langgraph_node": data.get("node_id"),
                "ls_provider": data.get("provider"), "ls_model_name": data.get("model")}

    def _chunk(self, data: dict, text: str, **extra) -> dict:
        return {"content": text, "additional_kwargs": {}, "response_metadata": extra.pop("response_metadata", {}),
                "type": "AIMessageChunk", "name": None, "id": self._message_id(data.get("node_id") or ""),
                "tool_calls": [], "invalid_tool_calls": [], "tool_call_chunks": [], **extra}

    def _event(self, kind: str, name: str, envelope: dict, data: dict) -> dict:
        return {"event": kind, "name": name, "run_id": self.run_id, "tags": [], "data": data,
                "metadata": {"langgraph_node": envelope["data"].get("node_id"), "thread_id": self.thread_id,
                             "chatter_event": envelope["event"]}, "parent_ids": []}

    def _native_frames(self, name: str, data: dict, ts: str) -> list[tuple[str, object]]:
        """A registered graph's own stream parts, as LangGraph's server streams them (its subgraphs' under
        `<mode>|<namespace>`)."""
        namespace = data.get("namespace") or []
        if namespace and not self.subgraphs:  # a subgraph's parts only when the client asked for them
            return []
        event = "|".join([name, *namespace])
        if name == "values" and not namespace:
            self.last_values = data["values"]
        out = []
        if name == "checkpoints" and "debug" in self.modes:  # LangGraph's debug stream shows each checkpoint
            step = ((data[name] or {}).get("metadata") or {}).get("step")
            out.append(("|".join(["debug", *namespace]),
                        {"type": "checkpoint", "step": step, "timestamp": ts, "payload": data[name]}))
        if name == "updates" and not namespace:  # a node's own writes are its task's result
            for node, update in (data["updates"] or {}).items():
                if node in self.ended_tasks:
                    task, step = self.ended_tasks.pop(node)
                    out += self._task_frames({**task, "result": update}, ts=ts, step=step)
        return out + ([(event, data[name])] if name in self.modes else [])

    def _message_frames(self, chunk: dict, metadata: dict) -> list[tuple[str, object]]:
        """A registered graph's message in the `messages` mode, as LangGraph's server streams it: its metadata when
        it first comes, then each chunk as the message so far (`messages/partial`), or a message a node returned
        whole as it is (`messages/complete`)."""
        message = messages_from_dict([{"type": chunk.get("type"), "data": chunk}])[0]
        out = []
        if message.id in self.graph_messages:
            self.graph_messages[message.id] += message
        else:
            self.graph_messages[message.id] = message
            out.append(("messages/metadata", {message.id: {"metadata": metadata}}))
        if isinstance(message, BaseMessageChunk):
            return out + [("messages/partial", [as_json(self.graph_messages[message.id])])]
        return out + [("messages/complete", [chunk])]

    def _task_frames(self, task: dict, *, ts, step=None) -> list[tuple[str, object]]:
        """A task's start or result (LangGraph's task payloads) in the `tasks` and `debug` modes."""
        out = [("tasks", task)] if "tasks" in self.modes else []
        if "debug" in self.modes:
            kind = "task_result" if "result" in task else "task"
            out.append(("debug", {"type": kind, "step": step, "timestamp": ts, "payload": task}))
        return out

    async def frames(self, envelope: dict) -> list[tuple[str, object]]:
        """(event, data) pairs for one Chatter event, in order."""
        name, data, modes, out = envelope["event"], envelope["data"], self.modes, []
        if name in ("values", "updates", "custom", "checkpoints", "tasks") and "namespace" in data:
            return self._native_frames(name, data, envelope["ts"])
        if name in ("messages", "tools", "lifecycle") and "namespace" in data:  # the thread protocol's (v3) only
            return []
        if name == "message_chunk":  # a registered graph's model chunk, [chunk, metadata], as LangGraph streams it
            namespace = data.get("namespace") or []
            event = "|".join(["messages", *namespace]) if self.subgraphs else "messages"
            out = [(event, data[name])] if "messages-tuple" in self.modes else []
            return out + (self._message_frames(*data[name]) if "messages" in self.modes else [])
        if name == "graph_event":  # one of its astream_events, as it is
            return [("events", data[name])] if "events" in self.modes else []
        if self.native:
            modes = self.modes - {"values", "updates", "custom"} - self.graph_streams
        node = data.get("node_id") or ""
        if name in ("token", "tool_call_delta"):  # a piece of the reply: its text, or a piece of a tool call
            self._message_id_noted(node, data)
            text, piece = data.get("text", ""), {}
            if name == "token":
                self.text[node] = self.text.get(node, "") + text
            else:  # as LangGraph's server streams a model's tool_call_chunks, so merged chunks name the calls
                piece = {"name": data.get("name"), "args": data.get("arguments") or "", "id": data.get("id"),
                         "index": data.get("index"), "type": "tool_call_chunk"}
                self.calls.setdefault(node, []).append(piece)
            chunk = self._chunk(data, text, **({"tool_call_chunks": [piece], **_tool_call_fields([piece])}
                                               if piece else {}))
            if "messages-tuple" in modes:
                out.append(("messages", [chunk, self._meta(data)]))
            if "messages" in modes:
                out.append(("messages/partial", [self._chunk(data, self.text.get(node, ""), type="ai",
                                                             **_tool_call_fields(self.calls.get(node, [])))]))
            if "events" in modes:
                out.append(("events", self._event("on_chat_model_stream", node, envelope, {"chunk": chunk})))
            return out
        if "custom" in modes:
            out.append(("custom", envelope))
        if name in ("workflow_started", "workflow_resumed") and "values" in modes:
            out.append(("values", await self._values(ended=False, started=True)))
        if name == "workflow_started" and "events" in modes:
            out.append(("events", self._event("on_chain_start", "LangGraph", envelope, {"input": None})))
        if name == "node_started":
            task = {"id": f"{self.run_id}:{data.get('index')}", "name": node, "input": None, "triggers": []}
            self.open_task = task
            out += self._task_frames(task, ts=envelope["ts"], step=data.get("index"))
            if "events" in modes:
                out.append(("events", self._event("on_chain_start", node, envelope, {"input": None})))
        if name == "token_usage":
            self._message_id_noted(node, data)  # (a reply whose pieces this stream did not see: a whole one)
            calls = _tool_call_fields(self.calls.pop(node, []))
            usage = usage_metadata(prompt_tokens=data.get("prompt_tokens", 0),
                                   completion_tokens=data.get("completion_tokens", 0),
                                   cached_prompt_tokens=data.get("cached_prompt_tokens", 0),
                                   reasoning_tokens=data.get("reasoning_tokens", 0))
            response = {"model_provider": data.get("provider"), "model_name": data.get("model"),
                        "cost": data.get("cost"), "usage_estimated": data.get("estimated")}
            if "messages-tuple" in modes:
                out.append(("messages", [self._chunk(data, "", usage_metadata=usage, response_metadata=response,
                                                     chunk_position="last"), self._meta(data)]))
            if "messages" in modes:
                out.append(("messages/complete", [{**self._chunk(data, self.text.get(node, ""), type="ai",
                                                                 response_metadata=response, **calls),
                                                   "usage_metadata": usage}]))
            if "events" in modes:
                out.append(("events", self._event("on_chat_model_end", node, envelope, {"output": {
                    "content": self.text.get(node, ""), "tool_calls": calls["tool_calls"], "usage_metadata": usage,
                    "response_metadata": response}})))
            self.text.pop(node, None)
            self.message_ids.pop(node, None)
        if name == "tool_start" and "events" in modes:
            out.append(("events", self._event("on_tool_start", data.get("tool", ""), envelope, {"input": data})))
        if name == "tool_called" and "events" in modes:
            out.append(("events", self._event("on_tool_end" if data.get("ok") else "on_tool_error",
                                              data.get("tool", ""), envelope, {"output": data})))
        if name == "tool_called" and data.get("message_id"):  # a message a node returned whole, as LangGraph's
            # server streams one: as one chunk, and complete (a JSON workflow's tools node says it)
            if "messages-tuple" in modes:
                out.append(("messages", [_tool_message(data), self._meta(data)]))
            if "messages" in modes:
                out.append(("messages/complete", [_tool_message(data)]))
        if name in ("node_completed", "node_failed"):
            result = {key: value for key, value in data.items() if key != "node_id"}
            if "updates" in modes:
                out.append(("updates", {node: result}))
            task = {"id": f"{self.run_id}:{data.get('index')}", "name": node, "error": data.get("error"),
                    "interrupts": []}
            self.open_task = None
            if self.native and name == "node_completed":  # its result: the node's own writes, which follow
                self.ended_tasks[node] = (task, data.get("index"))
            else:
                out += self._task_frames({**task, "result": result}, ts=envelope["ts"], step=data.get("index"))
            if "events" in modes:
                out.append(("events", self._event("on_chain_end", node, envelope, {"output": result})))
        if name == "message_saved" and data.get("role") == "assistant" and "values" in modes:
            out.append(("values", await self._values(ended=True)))
        if name == "input_required" or name in TERMINAL_EVENTS:  # nodes whose writes never came: no result
            for task, step in self.ended_tasks.values():
                out += self._task_frames({**task, "result": None}, ts=envelope["ts"], step=step)
            self.ended_tasks.clear()
        if name == "input_required" and "breakpoint" in data:  # a static breakpoint: no question, as LangGraph's
            if "updates" in self.modes:
                out.append(("updates", {"__interrupt__": []}))
            if "values" in modes:
                out.append(("values", await self._values(ended=False)))
            out.append(("end", None))
        elif name == "input_required":  # the run pauses: LangGraph's interrupt, as its server streams it
            interrupt_id = data.get("interrupt_id")
            interrupt = {"value": await _question(self.run_id, interrupt_id), "id": interrupt_id}
            if isinstance(data.get("schema"), dict):
                interrupt["response_schema"] = data["schema"]
            if "updates" in self.modes:  # a registered graph's too: its own stream keeps its question apart
                out.append(("updates", {"__interrupt__": [interrupt]}))
            if "values" in modes:
                out.append(("values", {**await self._values(ended=False), "__interrupt__": [interrupt]}))
            elif self.native and "values" in self.modes:
                out.append(("values", {**self.last_values, "__interrupt__": [interrupt]}))
            asking = self.open_task or {"id": f"{self.run_id}:{node}", "name": node}  # a graph's interrupt():
            # the node that was running
            out += self._task_frames({"id": asking["id"], "name": asking["name"], "error": None,
                                      "interrupts": [interrupt], "result": {}}, ts=envelope["ts"])
            out.append(("end", None))
        if name == "workflow_completed":
            if "values" in modes and self.thread_id is None:
                out.append(("values", await self._values(ended=True)))
            if "events" in modes:
                out.append(("events", self._event("on_chain_end", "LangGraph", envelope, {"output": data})))
            out.append(("end", None))
        elif name in TERMINAL_EVENTS:
            out.append(("error", data.get("raised") or {"error": data.get("error_type") or name,
                                                        "message": data.get("error_message") or name}))
        return out

    async def _values(self, *, ended: bool, started: bool = False) -> dict:
        return await _state(execution_id=self.run_id, conversation_id=self.thread_id, inputs=self.inputs,
                            ended=ended, started=started)


async def langgraph_stream(feed: AsyncIterator[dict], *, maker: FrameMaker, resume: tuple[int, int] | None = None,
                           on_disconnect: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[str]:
    """SSE text of a run's feed (which starts at the resumed event, if any) in LangGraph's framing, written by the
    one SSE writer (core.api.sse).
    `on_disconnect`: called when the client goes away before the feed's end (on_disconnect="cancel")."""
    ended = False
    try:
        if resume is None:
            yield frame({"run_id": maker.run_id, "attempt": 1}, event="metadata", frame_id="0-0")
        async for envelope in feed:
            seq = envelope["seq"]
            for k, (event, data) in enumerate(await maker.frames(envelope)):
                if seq is None:
                    yield frame(data, event=event)
                elif resume is None or (seq, k) > resume:
                    yield frame(data, event=event, frame_id=f"{seq}-{k}")
        ended = True
    finally:
        await feed.aclose()
        if not ended and on_disconnect is not None:
            await on_disconnect()
