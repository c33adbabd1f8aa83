"""/langgraph/: LangGraph's Agent Server API over Chatter's rows. Thin: validate the body, call a service, render
it as the SDK expects.

The scope an API key needs (README, API keys), as on /api/v1/: "read" for every GET and every search, count or
read that LangGraph sends as a POST; "chat" to write threads (they are conversations), their state, the store
(as documents are) and assistants; "runs" to start a run (billed, and throttled like every run), cancel one, or
make a cron (agent_server.cron_views)."""
from __future__ import annotations

import uuid

from channels.db import database_sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from agent_server import assistants, mcp, meta, state, store, threads
from agent_server.bodies import (
    AssistantCreate,
    AssistantDelete,
    AssistantLatest,
    AssistantSearch,
    AssistantUpdate,
    History,
    RunCreate,
    RunList,
    StateAt,
    StateUpdate,
    StoreItemGet,
    StoreItemKey,
    StoreItemPut,
    StoreNamespaces,
    StoreSearch,
    ThreadCreate,
    ThreadSearch,
    ThreadUpdate,
    Versions,
)
from agent_server.http import ApiError, body_of, json_response, langgraph_endpoint, not_found, query_of
from agent_server.runs import (
    agent_run_of,
    is_registered_run,
    run_as_dict,
    run_cancel,
    run_cancel_if_in_progress,
    run_get,
    run_ended,
    run_list,
    run_start,
    run_values,
)
from agent_server.stream import FrameMaker, feed_until_waiting, langgraph_stream, parse_last_event_id
from chatter_project.health import database_reachable
from workflows.models import WorkflowExecution
from workflows.realtime import execution_feed

Mode = WorkflowExecution.Mode


# The server itself -------------------------------------------------------------------------------------------

@langgraph_endpoint("GET", public=True)
def server_ok(request, user):
    """Liveness; with ?check_db=1 the database must answer too (503 when it does not)."""
    if _flag(request, "check_db") and not database_reachable():
        raise ApiError(503, "the database does not answer")
    return {"ok": True}


@langgraph_endpoint("GET", public=True)
def server_info(request, user):
    return meta.server_info()


@csrf_exempt
def unknown_route(request, path=""):
    """Any other path under /langgraph/, whatever the method: the API's 404, never Django's page."""
    return not_found()


# Assistants -------------------------------------------------------------------------------------------------

@langgraph_endpoint("POST", scope="chat")
def assistant_create(request, user):
    body = body_of(request, AssistantCreate)
    return assistants.assistant_of(assistants.assistant_create(owner=user, **body.model_dump()))


@langgraph_endpoint("POST", scope="read")
def assistant_search(request, user):
    """One more than asked is read, to say in X-Pagination-Next (as LangGraph does) where the next page starts."""
    body = body_of(request, AssistantSearch)
    found = assistants.assistant_search(user=user, **{**body.model_dump(exclude={"select"}),
                                                      "limit": body.limit + 1})
    more, found = len(found) > body.limit, found[:body.limit]
    if body.select:
        found = [{field: assistant[field] for field in body.select} for assistant in found]
    return json_response(found, headers={"X-Pagination-Next": str(body.offset + body.limit)} if more else None)


@langgraph_endpoint("POST", scope="read")
def assistant_count(request, user):
    body = body_of(request, AssistantSearch)
    return len(assistants.assistant_search(user=user, **{**body.model_dump(exclude={"select"}), "limit": 10**6,
                                                         "offset": 0}))


@langgraph_endpoint("GET", "PATCH", "DELETE", scope="chat")
def assistant_detail(request, user, assistant_id):
    """GET: the assistant (its version in force); PATCH: a new version of a user's assistant; DELETE: delete it (a
    system assistant, its graph's own, cannot be changed or deleted: 403)."""
    row = assistants.assistant_row(user=user, assistant_id=assistant_id)
    if request.method == "PATCH":
        body = body_of(request, AssistantUpdate)
        row = assistants.assistant_update(assistant=assistants.own_assistant(row), actor=user, **body.model_dump())
    elif request.method == "DELETE":
        query = query_of(request, AssistantDelete)
        assistants.assistant_delete(assistant=assistants.own_assistant(row), actor=user,
                                    delete_threads=query.delete_threads)
        return None
    return assistants.assistant_of(row)


@langgraph_endpoint("POST", scope="chat")
def assistant_latest(request, user, assistant_id):
    body = body_of(request, AssistantLatest)
    row = assistants.own_assistant(assistants.assistant_row(user=user, assistant_id=assistant_id))
    return assistants.assistant_of(assistants.assistant_set_latest(assistant=row, actor=user, version=body.version))


@langgraph_endpoint("GET")
def assistant_graph(request, user, assistant_id):
    return assistants.assistant_graph(row=assistants.assistant_row(user=user, assistant_id=assistant_id))


@langgraph_endpoint("GET")
def assistant_schemas(request, user, assistant_id):
    return assistants.assistant_schemas(row=assistants.assistant_row(user=user, assistant_id=assistant_id))


@langgraph_endpoint("GET")
def assistant_subgraphs(request, user, assistant_id, namespace=None):
    assistants.assistant_row(user=user, assistant_id=assistant_id)
    return {}


@langgraph_endpoint("POST", scope="read")
def assistant_versions(request, user, assistant_id):
    body = body_of(request, Versions)
    return assistants.assistant_versions(row=assistants.assistant_row(user=user, assistant_id=assistant_id),
                                         **body.model_dump())


# Threads ----------------------------------------------------------------------------------------------------

@langgraph_endpoint("POST", scope="chat")
def thread_create(request, user):
    body = body_of(request, ThreadCreate)
    if body.supersteps:
        raise ApiError(422, "supersteps are not supported: a new thread has no run, so no graph whose state they "
                            "could build (run a turn, then update_state)")
    thread_id = None
    if body.thread_id is not None:
        if not _is_uuid(body.thread_id):
            raise ApiError(422, "thread_id must be a UUID")
        thread_id = uuid.UUID(body.thread_id)
    conversation = threads.thread_create(owner=user, thread_id=thread_id, metadata=body.metadata,
                                         if_exists=body.if_exists)
    return threads.thread_as_dict(conversation)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@langgraph_endpoint("POST", scope="read")
def thread_search(request, user):
    body = body_of(request, ThreadSearch)
    if body.values:
        raise ApiError(422, "searching threads by values is not supported")
    found = threads.thread_search(user=user, **body.model_dump(exclude={"values"}))
    return threads.threads_as_dicts(found)


@langgraph_endpoint("POST", scope="read")
def thread_count(request, user):
    body = body_of(request, ThreadSearch)
    return len(threads.thread_search(user=user, **{**body.model_dump(exclude={"values"}), "limit": 10**6,
                                                   "offset": 0}))


@langgraph_endpoint("GET", "PATCH", "DELETE", scope="chat")
def thread_detail(request, user, thread_id):
    conversation = threads.thread_get(user=user, thread_id=thread_id)
    if request.method == "PATCH":
        conversation = threads.thread_update(conversation=conversation, metadata=body_of(request, ThreadUpdate).metadata)
    elif request.method == "DELETE":
        threads.thread_delete(conversation=conversation, actor=user)
        return None
    return threads.thread_as_dict(conversation)


@langgraph_endpoint("POST", scope="chat")
def thread_copy(request, user, thread_id):
    conversation = threads.thread_get(user=user, thread_id=thread_id)
    return threads.thread_as_dict(threads.thread_copy(conversation=conversation, actor=user))


@langgraph_endpoint("GET", "POST", scope="chat")
def thread_state(request, user, thread_id):
    """GET: the thread's state now; POST: update it (a new checkpoint, LangGraph's update_state)."""
    conversation = threads.thread_get(user=user, thread_id=thread_id)
    if request.method == "POST":
        body = body_of(request, StateUpdate)
        checkpoint_id = body.checkpoint_id or (body.checkpoint or {}).get("checkpoint_id")
        return state.thread_state_update(conversation=conversation, values=body.values, as_node=body.as_node,
                                         checkpoint_id=checkpoint_id)
    return state.thread_state(conversation=conversation, subgraphs=_flag(request, "subgraphs"))


def _flag(request: HttpRequest, name: str) -> bool:
    return request.GET.get(name, "").lower() in ("1", "true")


@langgraph_endpoint("GET")
def thread_state_at(request, user, thread_id, checkpoint_id):
    return state.thread_state(conversation=threads.thread_get(user=user, thread_id=thread_id),
                              checkpoint_id=checkpoint_id, subgraphs=_flag(request, "subgraphs"))


@langgraph_endpoint("POST", scope="read")
def thread_state_at_checkpoint(request, user, thread_id):
    body = body_of(request, StateAt)
    checkpoint_id = body.checkpoint.get("checkpoint_id")
    if not checkpoint_id:
        raise ApiError(422, "checkpoint.checkpoint_id is required")
    return state.thread_state(conversation=threads.thread_get(user=user, thread_id=thread_id),
                              checkpoint_id=checkpoint_id, subgraphs=body.subgraphs)


@langgraph_endpoint("GET", "POST", scope="read")
def thread_history(request, user, thread_id):
    """The thread's checkpoints, newest first (agent_server.state)."""
    body = body_of(request, History) if request.method == "POST" else query_of(request, History)
    before = body.before.get("checkpoint_id") if isinstance(body.before, dict) else body.before
    return state.thread_history(conversation=threads.thread_get(user=user, thread_id=thread_id), limit=body.limit,
                                before=before, metadata=body.metadata)


# Runs -------------------------------------------------------------------------------------------------------

def _run_path(execution) -> str:
    if execution.conversation_id:
        return f"/threads/{execution.conversation_id}/runs/{execution.pk}"
    return f"/runs/{execution.pk}"


def _stream_response(started_or_feed, *, maker: FrameMaker, resume=None, execution=None,
                     on_disconnect=None) -> StreamingHttpResponse:
    response = StreamingHttpResponse(langgraph_stream(started_or_feed, maker=maker, resume=resume,
                                                      on_disconnect=on_disconnect),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    if execution is not None:
        response["Content-Location"] = _run_path(execution)
        if execution.conversation_id:
            response["Location"] = f"{_run_path(execution)}/stream"  # relative to the API's root, as the SDK joins it
    return response


def _runs(request, user, thread_id=None):
    if request.method == "GET":
        query = query_of(request, RunList)
        return [run_as_dict(execution) for execution in run_list(
            user=user, thread_id=thread_id, limit=query.limit, offset=query.offset, status=query.status or None)]
    started = run_start(owner=user, body=body_of(request, RunCreate), mode=Mode.BACKGROUND, thread_id=thread_id,
                        api_key=request.auth)
    return json_response(run_as_dict(started.execution), headers={"Content-Location": _run_path(started.execution)})


@langgraph_endpoint("GET", "POST", scope="runs", starts_runs=True)
def thread_runs(request, user, thread_id):
    return _runs(request, user, thread_id)


@langgraph_endpoint("POST", scope="runs", starts_runs=True)
def stateless_runs(request, user):
    return _runs(request, user)


def _runs_stream(request, user, thread_id=None):
    body = body_of(request, RunCreate)
    started = run_start(owner=user, body=body, mode=Mode.STREAM, thread_id=thread_id, api_key=request.auth)
    maker = FrameMaker(run_id=str(started.execution.pk), thread_id=started.thread_id, modes=started.modes,
                       inputs=started.inputs, native=is_registered_run(started.execution),
                       subgraphs=body.stream_subgraphs)
    on_disconnect = _canceller(started.execution.pk, user) if body.on_disconnect == "cancel" else None
    return _stream_response(started.feed, maker=maker, execution=started.execution, on_disconnect=on_disconnect)


def _canceller(execution_id, user):
    """What a stream does when its client goes away before the end with on_disconnect="cancel" (a run's stream) or
    cancel_on_disconnect=true (joining one): cancel the run it was reading."""

    async def on_disconnect() -> None:
        await database_sync_to_async(run_cancel_if_in_progress)(execution_id=execution_id, actor=user)

    return on_disconnect


@langgraph_endpoint("POST", scope="runs", starts_runs=True)
def thread_runs_stream(request, user, thread_id):
    return _runs_stream(request, user, thread_id)


@langgraph_endpoint("POST", scope="runs", starts_runs=True)
def stateless_runs_stream(request, user):
    return _runs_stream(request, user)


async def _runs_wait(request, user, thread_id=None):
    """Run here to its end (or, queued behind the thread's run, wait for a worker to run it) and answer its values."""
    body = body_of(request, RunCreate)
    started = await database_sync_to_async(run_start)(owner=user, body=body, mode=Mode.SYNC, thread_id=thread_id,
                                                               api_key=request.auth)
    if not started.execution.is_terminal:
        await run_ended(execution_id=started.execution.pk)
    values = await database_sync_to_async(_values_now)(started.execution, started.inputs)
    return json_response(values, headers={"Content-Location": _run_path(started.execution)})


def _values_now(execution, inputs=None) -> dict:
    execution.refresh_from_db()
    return run_values(execution=execution, inputs=inputs)


@langgraph_endpoint("POST", scope="runs", starts_runs=True)
async def thread_runs_wait(request, user, thread_id):
    return await _runs_wait(request, user, thread_id)


@langgraph_endpoint("POST", scope="runs", starts_runs=True)
async def stateless_runs_wait(request, user):
    return await _runs_wait(request, user)


@langgraph_endpoint("GET", "DELETE", scope="runs")
def run_detail(request, user, thread_id, run_id):
    execution = run_get(user=user, thread_id=thread_id, run_id=run_id)
    if request.method == "DELETE":
        raise ApiError(422, "runs are kept: their tokens and cost are part of the record")
    return run_as_dict(execution)


@langgraph_endpoint("GET")
async def run_join_view(request, user, thread_id, run_id):
    execution = await database_sync_to_async(run_get)(user=user, thread_id=thread_id, run_id=run_id)
    if not execution.is_terminal:
        await run_ended(execution_id=execution.pk)
    return await database_sync_to_async(_values_now)(execution)


def _join_stream_scope(request: HttpRequest) -> str:
    return "runs" if _flag(request, "cancel_on_disconnect") else "read"  # leaving then cancels the run


@langgraph_endpoint("GET", scope=_join_stream_scope)
def run_join_stream(request, user, thread_id, run_id):
    execution = run_get(user=user, thread_id=thread_id, run_id=run_id)
    resume = parse_last_event_id(request.headers.get("Last-Event-ID"))
    agent_run = agent_run_of(execution)
    modes = [mode for mode in request.GET.getlist("stream_mode") if mode] or (
        agent_run.stream_mode if agent_run else ["values"])
    maker = FrameMaker(run_id=str(execution.pk), thread_id=str(execution.conversation_id), modes=modes, inputs=[],
                       native=is_registered_run(execution))
    feed = feed_until_waiting(execution_feed(execution.pk, after=resume[0] - 1 if resume else 0),
                              execution_id=execution.pk)
    return _stream_response(feed, maker=maker, resume=resume, on_disconnect=_canceller(
        execution.pk, user) if _flag(request, "cancel_on_disconnect") else None)


def _cancel(user, thread_id, run_id) -> WorkflowExecution:
    return run_cancel(execution=run_get(user=user, thread_id=thread_id, run_id=run_id), actor=user)


def _run_now(execution) -> dict:
    execution.refresh_from_db()
    return run_as_dict(execution)


@langgraph_endpoint("POST", scope="runs")
async def run_cancel_view(request, user, thread_id, run_id):
    """Ask the run to stop (at once if pending, at its next token or node boundary if running); with ?wait=1,
    answer once it has ended."""
    execution = await database_sync_to_async(_cancel)(user, thread_id, run_id)
    if request.GET.get("wait") in ("1", "true", "True") and not execution.is_terminal:
        await run_ended(execution_id=execution.pk)
    body = await database_sync_to_async(_run_now)(execution)
    return json_response(body, status=200 if body["status"] not in ("pending", "running") else 202)


# Store ------------------------------------------------------------------------------------------------------

@langgraph_endpoint("GET", "PUT", "DELETE", scope="chat")
def store_items(request, user):
    if request.method == "PUT":
        body = body_of(request, StoreItemPut)
        store.store_item_put(owner=user, namespace=body.namespace, key=body.key, value=body.value)
        return None
    if request.method == "DELETE":
        body = body_of(request, StoreItemKey)
        store.store_item_delete(owner=user, namespace=body.namespace, key=body.key)
        return None
    query = query_of(request, StoreItemGet)
    item = store.store_item_get(owner=user, namespace=query.labels(), key=query.key)
    return json_response(None if item is None else store.item_as_dict(item))  # none there: null, as LangGraph's


@langgraph_endpoint("POST", scope="read")
def store_search(request, user):
    body = body_of(request, StoreSearch)
    return {"items": [store.item_as_dict(item) for item in store.store_item_search(owner=user, **body.model_dump())]}


@langgraph_endpoint("POST", scope="read")
def store_namespaces(request, user):
    body = body_of(request, StoreNamespaces)
    return {"namespaces": store.store_namespaces(owner=user, **body.model_dump())}


# --- the thread streaming protocol (agent_server.protocol) ----------------------------------------------------------
def _command_scope(request: HttpRequest) -> str:
    return "runs"  # its commands start runs (run.start) or answer them (input.respond), billed like every run


@langgraph_endpoint("POST", scope=_command_scope, starts_runs=True)
async def thread_commands(request, user, thread_id):
    from agent_server.http import json_parse_or_none
    from agent_server.protocol import command_answer, feed_drained

    command = json_parse_or_none(request)
    status, envelope, feed = await database_sync_to_async(command_answer)(
        owner=user, thread_id=thread_id, command=command, api_key=request.auth)
    if feed is not None:
        feed_drained(feed)
    return json_response(envelope, status=status)


@langgraph_endpoint("POST", scope="read")
async def thread_event_stream(request, user, thread_id):
    from agent_server.bodies import EventStreamFilter
    from agent_server.protocol import sse_frame, thread_events

    wanted = body_of(request, EventStreamFilter)
    try:
        uuid.UUID(str(thread_id))
    except ValueError:
        raise ApiError(404, "Thread not found") from None

    async def frames():
        events = thread_events(owner=user, thread_id=thread_id, channels=wanted.channels,
                               namespaces=wanted.namespaces, depth=wanted.depth, since=wanted.since)
        try:
            async for event in events:
                yield ": heartbeat\r\n\r\n" if event is None else sse_frame(event)
        finally:
            await events.aclose()

    response = StreamingHttpResponse(frames(), content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"
    return response


# --- MCP (agent_server.mcp) -------------------------------------------------------------------------------------
@langgraph_endpoint("POST", scope=mcp.mcp_scope, starts_runs=mcp.mcp_starts_run)
async def mcp_endpoint(request, user):
    """MCP's Streamable HTTP transport, stateless: one JSON-RPC message per POST, answered as JSON. No server-sent
    stream and no session, so GET and DELETE are 405 (langgraph_endpoint's, naming POST)."""
    return await mcp.mcp_answer(request, user=user)
