"""LangGraph's thread streaming protocol (the SDK's `client.threads.stream`, RemoteGraph's v3): commands to a thread
(`POST /threads/{id}/commands`: `run.start`, `input.respond`) and its event streams (`POST
/threads/{id}/stream/events`, SSE), over the same runs, rows and log as every other surface
(docs/api/langgraph.md#the-thread-streaming-protocol).

A thread's events are its runs' events (workflows.ExecutionEvent) spoken as the protocol's; an event's `seq` orders
the whole thread (from the row's id, k-th of the events a row gives). A run's question or end is sent no sooner
than QUESTION_DELAY_S after it was written, so that a stream a client opens meanwhile has what came before it first.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.utils import timezone

from agent_server.bodies import RunCreate
from agent_server.messages import question_interrupt
from agent_server.threads import thread_get
from core.api.sse import frame
from conversations.models import Conversation
from core.errors import ChatterError, Conflict, NotFound
from workflows.events import TERMINAL_EVENTS
from workflows.hub import Subscription
from workflows.models import ExecutionEvent, WorkflowExecution
from workflows.realtime import user_subscribe

PER_ROW = 4  # the most wire events one row gives (seq = row id × PER_ROW + k)
HEARTBEAT_S = 5.0
QUESTION_DELAY_S = 0.5
_NATIVE = ("values", "updates", "custom", "messages", "tools", "lifecycle")
_HELD = {"input_required", *TERMINAL_EVENTS}


class CommandError(Exception):
    """A command the protocol answers with an error envelope."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# --- commands ------------------------------------------------------------------------------------------------
def command_run(*, owner, thread_id: str, command: dict, api_key=None):
    """Carry out one command; returns (its result, the run's feed to drain or None)."""
    from agent_server.runs import run_start

    method, params = command.get("method"), command.get("params") or {}
    if not isinstance(params, dict):
        raise CommandError("invalid_argument", "params must be an object")
    if method == "run.start":
        assistant_id = params.get("assistant_id")
        if not isinstance(assistant_id, str) or not assistant_id:
            raise CommandError("invalid_argument", "run.start needs an assistant_id")
        run_input = params.get("input")
        body = {"assistant_id": assistant_id, "config": params.get("config") or None,
                "metadata": params.get("metadata") or None, "if_not_exists": "create",
                "multitask_strategy": "enqueue", "context": params.get("context")}
        if run_input is not None and _waiting(owner=owner, thread_id=thread_id):
            body["command"] = {"resume": run_input}  # the thread waits for an answer: this input is it
        else:
            body["input"] = run_input
        started = run_start(owner=owner, body=RunCreate.model_validate(body), mode=WorkflowExecution.Mode.STREAM,
                            thread_id=thread_id, api_key=api_key, streaming="v3")
        return {"run_id": str(started.execution.pk)}, started.feed
    if method == "input.respond":
        responses = params.get("responses")
        if responses is None:
            responses = [{"interrupt_id": params.get("interrupt_id"), "response": params.get("response")}]
        if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
            raise CommandError("invalid_argument", "responses must be a list of {interrupt_id, response}")
        waiting = _waiting(owner=owner, thread_id=thread_id)
        if waiting is None:
            raise CommandError("no_such_run", "no run of this thread is waiting for input")
        asked = {q["interrupt_id"] for q in (waiting.output_data or {}).get("input_required") or []}
        answers = {r.get("interrupt_id"): r.get("response") for r in responses}
        if not set(answers) <= asked:
            raise CommandError("no_such_interrupt", "the run waits on no such interrupt")
        assistant_id = (thread_get(user=owner, thread_id=thread_id).metadata or {}).get("assistant_id") or ""
        started = run_start(owner=owner, body=RunCreate.model_validate(
            {"assistant_id": assistant_id, "command": {"resume": answers}}), mode=WorkflowExecution.Mode.STREAM,
            thread_id=thread_id, api_key=api_key)
        return {}, started.feed
    raise CommandError("unknown_command", f"unknown command {method!r}")


def _waiting(*, owner, thread_id) -> WorkflowExecution | None:
    try:
        conversation = thread_get(user=owner, thread_id=thread_id)
    except NotFound:
        return None
    return WorkflowExecution.objects.filter(conversation_id=conversation.pk,
                                            status=WorkflowExecution.Status.WAITING).order_by("-created_at").first()


def thread_last_seq(*, owner, thread_id) -> int:
    """The seq of the thread's last event so far (0 when none): what a command has applied through."""
    last = _rows(owner=owner, thread_id=thread_id).order_by("-pk").values_list("pk", flat=True).first()
    return (last + 1) * PER_ROW - 1 if last else 0


def command_answer(*, owner, thread_id: str, command: Any, api_key=None) -> tuple[int, dict, Any]:
    """(HTTP status, envelope, feed to drain) for a command as the client sent it."""
    if not isinstance(command, dict) or not isinstance(command.get("id"), int) or isinstance(command.get("id"), bool) \
            or not isinstance(command.get("method"), str):
        return 400, {"type": "error", "id": None, "error": "invalid_argument",
                     "message": "a command is {\"id\": <integer>, \"method\": <text>, \"params\": {...}}"}, None
    applied = thread_last_seq(owner=owner, thread_id=thread_id)
    try:
        result, feed = command_run(owner=owner, thread_id=thread_id, command=command, api_key=api_key)
    except CommandError as exc:
        return 200, {"type": "error", "id": command["id"], "error": exc.code, "message": exc.message}, None
    except ChatterError as exc:
        code = "no_such_run" if isinstance(exc, NotFound) else (
            "invalid_argument" if exc.status in (400, 422) else "not_supported" if isinstance(exc, Conflict)
            else "unknown_error")
        return 200, {"type": "error", "id": command["id"], "error": code, "message": exc.message}, None
    return 200, {"type": "success", "id": command["id"], "result": result,
                 "meta": {"applied_through_seq": applied}}, feed


# --- events ------------------------------------------------------------------------------------------------------
def _rows(*, owner, thread_id):
    return ExecutionEvent.objects.filter(execution__conversation_id=thread_id, execution__owner=owner)


def _graph_name(execution: WorkflowExecution) -> str:
    from agent_server.assistants import assistant_id_of_execution

    return assistant_id_of_execution(execution) or "graph"


def wire_events(row: ExecutionEvent, *, graph_name: str) -> list[dict]:
    """The protocol's events for one of the thread's rows, in order (without seq and event_id)."""
    name, data = row.event, row.data or {}
    timestamp = int(row.created_at.timestamp() * 1000)

    def event(method: str, payload: Any, namespace: list | None = None) -> dict:
        return {"type": "event", "method": method,
                "params": {"namespace": list(namespace or []), "timestamp": timestamp, "data": payload}}

    if name in _NATIVE and "namespace" in data:
        return [event(name, data.get(name), data["namespace"])]
    if name in ("workflow_started", "workflow_resumed"):
        return [event("lifecycle", {"event": "running", "graph_name": graph_name})]
    if name == "input_required":
        question = _question(row)
        return [event("input.requested", {"interrupt_id": data.get("interrupt_id"), "payload": question,
                                          "value": question}),
                event("lifecycle", {"event": "interrupted", "graph_name": graph_name})]
    if name == "workflow_completed":
        return [event("lifecycle", {"event": "completed", "graph_name": graph_name})]
    if name in TERMINAL_EVENTS:
        return [event("lifecycle", {"event": "failed", "graph_name": graph_name,
                                    "error": data.get("error_message") or data.get("error_type") or name})]
    return []


def _question(row: ExecutionEvent):
    """What the run asked (its interrupt's value), as its row keeps it and every surface reads it."""
    for question in (row.execution.output_data or {}).get("input_required") or []:
        if question.get("interrupt_id") == (row.data or {}).get("interrupt_id"):
            return question_interrupt(question)["value"]
    return None


def _channel(event: dict) -> str:
    method = event["method"]
    if method == "input.requested":
        return "input"
    if method == "custom":
        data = event["params"]["data"]
        name = data.get("name") if isinstance(data, dict) else None
        return f"custom:{name}" if isinstance(name, str) and name else "custom"
    return method


def _segment_matches(segment: str, wanted: str) -> bool:
    return segment == wanted or (":" not in wanted and segment.split(":", 1)[0] == wanted)


def matches(event: dict, *, channels: list[str], namespaces: list[list[str]] | None, depth: int | None) -> bool:
    """Whether a stream with this filter gets the event: one of its channels (a named custom channel, or every
    custom event for `custom`), under one of its namespaces (a prefix; a segment without `:task` matches any task
    of that node), no deeper than `depth` below it."""
    channel = _channel(event)
    if channel not in channels and not (channel.startswith("custom:") and "custom" in channels):
        return False
    if not namespaces:
        return True
    namespace = event["params"]["namespace"]
    for prefix in namespaces:
        if len(prefix) <= len(namespace) and all(_segment_matches(s, w) for s, w in zip(namespace, prefix)) and (
                depth is None or len(namespace) - len(prefix) <= depth):
            return True
    return False


@database_sync_to_async
def _events_after(*, owner, thread_id, after_pk: int, limit: int = 500) -> list[tuple[int, Any, list[dict]]]:
    """The thread's rows after `after_pk` as (row id, when written, their wire events with seq and event_id)."""
    rows = list(_rows(owner=owner, thread_id=thread_id).filter(pk__gt=after_pk).select_related(
        "execution", "execution__template").order_by("pk")[:limit])
    names: dict = {}
    out = []
    for row in rows:
        if row.execution_id not in names:
            names[row.execution_id] = _graph_name(row.execution)
        events = wire_events(row, graph_name=names[row.execution_id])
        for k, event in enumerate(events):
            event["seq"] = row.pk * PER_ROW + k
            event["event_id"] = f"{row.execution_id}:{row.seq}:{k}"
        out.append((row.pk, row.created_at if row.event in _HELD else None, events))
    return out


def sse_frame(event: dict) -> str:
    """An event as an SSE frame, written by the one SSE writer (core.api.sse)."""
    return frame(event, event=event["method"], frame_id=event["seq"])


def thread_stream_check(*, owner, thread_id) -> None:
    """A thread's event stream is its owner's: another user's thread is not found (404), as on every route of it. A
    thread nobody has yet is waited for: the SDK names a new thread itself and may open its streams before the
    run.start that makes it."""
    try:
        thread_get(user=owner, thread_id=thread_id)
    except NotFound:
        if Conversation.objects.filter(pk=thread_id).exists():
            raise


async def thread_events(*, owner, thread_id, channels: list[str], namespaces: list[list[str]] | None,
                        depth: int | None, since: int | None) -> AsyncIterator[dict | None]:
    """The thread's events for a stream, from the first after `since`, then as they come, until the client leaves;
    None when a heartbeat is due (nothing came for HEARTBEAT_S). The thread's log is read again when the hub tells
    of a new event of the owner's runs (workflows.realtime's one event path), and at each heartbeat, for what the
    hub did not bring (Redis down)."""
    after_pk = (since + 1) // PER_ROW - 1 if since else 0
    live = user_subscribe(owner.pk)
    try:
        await live.ready()
        quiet_since = time.monotonic()
        while True:
            batch = await _events_after(owner=owner, thread_id=thread_id, after_pk=max(after_pk, 0))
            for pk, held_from, events in batch:
                if held_from is not None:  # a question or an end: not before the streams opened meanwhile caught up
                    wait = QUESTION_DELAY_S - (timezone.now() - held_from).total_seconds()
                    if wait > 0:
                        await asyncio.sleep(wait)
                for event in events:
                    if (since is None or event["seq"] > since) and matches(
                            event, channels=channels, namespaces=namespaces, depth=depth):
                        yield event
                        quiet_since = time.monotonic()
                after_pk = pk
            if not batch:
                if time.monotonic() - quiet_since >= HEARTBEAT_S:
                    quiet_since = time.monotonic()
                    yield None
                await _logged(live, HEARTBEAT_S - (time.monotonic() - quiet_since))
    finally:
        live.close()


async def _logged(live: Subscription, timeout: float) -> None:
    """Wait until one of the owner's runs logs an event (a token delta is no row), `timeout` s at most."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if any(envelope.get("seq") is not None for envelope in await live.get(left)):
            return


_draining: set = set()


def feed_drained(feed) -> None:
    """A run a command started goes on without a reader: its feed is read to its end on the server's event loop
    (from the view's thread, asgiref hands the task's start to that loop), so it lets go of its subscription."""
    async def drain() -> None:
        try:
            async for _ in feed:
                pass
        finally:
            await feed.aclose()

    async def start() -> None:
        task = asyncio.get_running_loop().create_task(drain())
        _draining.add(task)  # (the loop keeps only a weak reference to a task)
        task.add_done_callback(_draining.discard)

    async_to_sync(start)()
