"""/langgraph/: LangGraph's Agent Server API over Chatter's rows. Thin: validate the body, call a service, render
it as the SDK expects. Each route is a view on the project's one HTTP stack (agent_server.http.LangGraphView: DRF,
as /api/v1/).

The scope an API key needs (README, API keys), as on /api/v1/: "read" for every GET and every search, count or
read that LangGraph sends as a POST; "chat" to write threads (they are conversations), their state, the store
(as documents are) and assistants; "runs" to start a run (billed, and throttled like every run), cancel one, or
make a cron (agent_server.cron_views). The runs' routes are agent_server.run_views'."""
from __future__ import annotations

import uuid

from rest_framework.exceptions import ParseError
from rest_framework.response import Response

from agent_server import assistants, mcp, meta, state, store, threads
from agent_server.bodies import (
    AssistantCreate,
    AssistantDelete,
    AssistantLatest,
    AssistantSearch,
    AssistantUpdate,
    EventStreamFilter,
    History,
    StateAt,
    StateUpdate,
    StoreItemGet,
    StoreItemKey,
    StoreItemPut,
    StoreNamespaces,
    StoreSearch,
    ThreadCreate,
    ThreadPrune,
    ThreadSearch,
    ThreadUpdate,
    Versions,
)
from agent_server.http import READ, ApiError, BodyBytes, LangGraphView, PublicView, json_null
from agent_server.protocol import command_answer, feed_drained, sse_frame, thread_events, thread_stream_check
from agent_server.thread_stream import thread_resume_point, thread_stream, thread_stream_modes
from core.api.parsers import json_parse
from core.api.sse import HEARTBEAT, event_stream_response
from core.db import database_reachable

NO_CONTENT = 204


# The server itself -------------------------------------------------------------------------------------------

class ServerOk(PublicView):
    def get(self, request):
        """Liveness; with ?check_db=1 the database must answer too (503 when it does not)."""
        if self.flag("check_db") and not database_reachable():
            raise ApiError(503, "the database does not answer")
        return Response({"ok": True})


class ServerInfo(PublicView):
    def get(self, request):
        return Response(meta.server_info())


class UnknownRoute(PublicView):
    """Any other path under /langgraph/, whatever the method: the API's 404, never Django's page."""

    http_method_names = PublicView.http_method_names + ["head", "options", "trace"]
    schema = None  # no operation: what the API does not have

    def initial(self, request, *args, **kwargs):
        raise ApiError(404, "Not Found")


# Assistants -------------------------------------------------------------------------------------------------

class AssistantCreateView(LangGraphView):
    key_scope = "chat"

    def post(self, request):
        body = self.body(AssistantCreate)
        return Response(assistants.assistant_of(assistants.assistant_create(owner=request.user, **body.model_dump())))


class AssistantSearchView(LangGraphView):
    key_scope = READ

    def post(self, request):
        """One more than asked is read, to say in X-Pagination-Next (as LangGraph does) where the next page
        starts."""
        body = self.body(AssistantSearch)
        found = assistants.assistant_search(user=request.user, **{**body.model_dump(exclude={"select"}),
                                                                  "limit": body.limit + 1})
        more, found = len(found) > body.limit, found[:body.limit]
        if body.select:
            found = [{field: assistant[field] for field in body.select} for assistant in found]
        return Response(found, headers={"X-Pagination-Next": str(body.offset + body.limit)} if more else None)


class AssistantCount(LangGraphView):
    key_scope = READ

    def post(self, request):
        body = self.body(AssistantSearch)
        return Response(len(assistants.assistant_search(user=request.user, **{
            **body.model_dump(exclude={"select"}), "limit": 10**6, "offset": 0})))


class AssistantDetail(LangGraphView):
    """GET: the assistant (its version in force); PATCH: a new version of a user's assistant; DELETE: delete it (a
    system assistant, its graph's own, cannot be changed or deleted: 403)."""

    key_scope = "chat"

    def get(self, request, assistant_id):
        return Response(assistants.assistant_of(assistants.assistant_row(user=request.user,
                                                                         assistant_id=assistant_id)))

    def patch(self, request, assistant_id):
        row = assistants.assistant_row(user=request.user, assistant_id=assistant_id)
        body = self.body(AssistantUpdate)
        row = assistants.assistant_update(assistant=assistants.own_assistant(row), actor=request.user,
                                          **body.model_dump())
        return Response(assistants.assistant_of(row))

    def delete(self, request, assistant_id):
        row = assistants.assistant_row(user=request.user, assistant_id=assistant_id)
        query = self.query(AssistantDelete)
        assistants.assistant_delete(assistant=assistants.own_assistant(row), actor=request.user,
                                    delete_threads=query.delete_threads)
        return Response(status=NO_CONTENT)


class AssistantLatestView(LangGraphView):
    key_scope = "chat"

    def post(self, request, assistant_id):
        body = self.body(AssistantLatest)
        row = assistants.own_assistant(assistants.assistant_row(user=request.user, assistant_id=assistant_id))
        return Response(assistants.assistant_of(assistants.assistant_set_latest(assistant=row, actor=request.user,
                                                                                version=body.version)))


class AssistantGraph(LangGraphView):
    def get(self, request, assistant_id):
        return Response(assistants.assistant_graph(row=assistants.assistant_row(user=request.user,
                                                                                assistant_id=assistant_id)))


class AssistantSchemas(LangGraphView):
    def get(self, request, assistant_id):
        return Response(assistants.assistant_schemas(row=assistants.assistant_row(user=request.user,
                                                                                  assistant_id=assistant_id)))


class AssistantSubgraphs(LangGraphView):
    def get(self, request, assistant_id, namespace=None):
        row = assistants.assistant_row(user=request.user, assistant_id=assistant_id)
        return Response(assistants.assistant_subgraphs(row=row, namespace=namespace, recurse=self.flag("recurse")))


class AssistantVersions(LangGraphView):
    key_scope = READ

    def post(self, request, assistant_id):
        body = self.body(Versions)
        return Response(assistants.assistant_versions(
            row=assistants.assistant_row(user=request.user, assistant_id=assistant_id), **body.model_dump()))


# Threads ----------------------------------------------------------------------------------------------------

class ThreadCreateView(LangGraphView):
    key_scope = "chat"

    def post(self, request):
        body = self.body(ThreadCreate)
        if body.supersteps:
            raise ApiError(422, "supersteps are not supported: a new thread has no run, so no graph whose state "
                                "they could build (run a turn, then update_state)")
        thread_id = None
        if body.thread_id is not None:
            if not _is_uuid(body.thread_id):
                raise ApiError(422, "thread_id must be a UUID")
            thread_id = uuid.UUID(body.thread_id)
        conversation = threads.thread_create(owner=request.user, thread_id=thread_id, metadata=body.metadata,
                                             if_exists=body.if_exists, ttl_minutes=body.ttl and body.ttl.ttl)
        return Response(threads.thread_as_dict(conversation))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class ThreadSearchView(LangGraphView):
    key_scope = READ

    def post(self, request):
        body = self.body(ThreadSearch)
        if body.values:
            raise ApiError(422, "searching threads by values is not supported")
        found = threads.thread_search(user=request.user, **body.model_dump(exclude={"values", "select", "extract"}))
        answered = threads.threads_as_dicts(found)
        if body.select:
            answered = [{field: thread[field] for field in body.select} for thread in answered]
        return Response(answered)


class ThreadCount(LangGraphView):
    key_scope = READ

    def post(self, request):
        body = self.body(ThreadSearch)
        return Response(len(threads.thread_search(user=request.user, **{
            **body.model_dump(exclude={"values", "select", "extract"}), "limit": 10**6, "offset": 0})))


class ThreadDetail(LangGraphView):
    key_scope = "chat"

    def get(self, request, thread_id):
        """`include=ttl` (comma-separated, as the stock server reads it): with the thread's ttl, when it has one."""
        conversation = threads.thread_get(user=request.user, thread_id=thread_id)
        answer = threads.thread_as_dict(conversation)
        include = {name.strip() for value in request.query_params.getlist("include") for name in value.split(",")}
        if "ttl" in include and (ttl := threads.thread_ttl(conversation=conversation)) is not None:
            answer["ttl"] = ttl
        return Response(answer)

    def patch(self, request, thread_id):
        conversation = threads.thread_get(user=request.user, thread_id=thread_id)
        body = self.body(ThreadUpdate)
        conversation = threads.thread_update(conversation=conversation, metadata=body.metadata,
                                             ttl_minutes=body.ttl and body.ttl.ttl)
        return Response(threads.thread_as_dict(conversation))

    def delete(self, request, thread_id):
        threads.thread_delete(conversation=threads.thread_get(user=request.user, thread_id=thread_id),
                              actor=request.user)
        return Response(status=NO_CONTENT)


class ThreadPruneView(LangGraphView):
    """client.threads.prune: the threads named deleted, all or none; {"pruned_count": how many}."""

    key_scope = "chat"

    def post(self, request):
        body = self.body(ThreadPrune)
        return Response({"pruned_count": threads.threads_prune(user=request.user, thread_ids=body.thread_ids,
                                                               actor=request.user)})


class ThreadCopy(LangGraphView):
    key_scope = "chat"

    def post(self, request, thread_id):
        conversation = threads.thread_get(user=request.user, thread_id=thread_id)
        return Response(threads.thread_as_dict(threads.thread_copy(conversation=conversation, actor=request.user)))


class ThreadState(LangGraphView):
    """GET: the thread's state now; POST: update it (a new checkpoint, LangGraph's update_state)."""

    key_scope = "chat"

    def get(self, request, thread_id):
        conversation = threads.thread_get(user=request.user, thread_id=thread_id)
        return Response(state.thread_state(conversation=conversation, subgraphs=self.flag("subgraphs")))

    def post(self, request, thread_id):
        conversation = threads.thread_get(user=request.user, thread_id=thread_id)
        body = self.body(StateUpdate)
        checkpoint_id = body.checkpoint_id or (body.checkpoint or {}).get("checkpoint_id")
        return Response(state.thread_state_update(conversation=conversation, values=body.values,
                                                  as_node=body.as_node, checkpoint_id=checkpoint_id))


class ThreadStateAt(LangGraphView):
    def get(self, request, thread_id, checkpoint_id):
        return Response(state.thread_state(conversation=threads.thread_get(user=request.user, thread_id=thread_id),
                                           checkpoint_id=checkpoint_id, subgraphs=self.flag("subgraphs")))


class ThreadStateAtCheckpoint(LangGraphView):
    key_scope = READ

    def post(self, request, thread_id):
        body = self.body(StateAt)
        checkpoint_id = body.checkpoint.get("checkpoint_id")
        if not checkpoint_id:
            raise ApiError(422, "checkpoint.checkpoint_id is required")
        return Response(state.thread_state(conversation=threads.thread_get(user=request.user, thread_id=thread_id),
                                           checkpoint_id=checkpoint_id, subgraphs=body.subgraphs))


class ThreadHistory(LangGraphView):
    """The thread's checkpoints, newest first (agent_server.state)."""

    key_scope = READ

    def get(self, request, thread_id):
        return self._history(self.query(History), thread_id)

    def post(self, request, thread_id):
        return self._history(self.body(History), thread_id)

    def _history(self, body: History, thread_id) -> Response:
        before = body.before.get("checkpoint_id") if isinstance(body.before, dict) else body.before
        return Response(state.thread_history(
            conversation=threads.thread_get(user=self.request.user, thread_id=thread_id), limit=body.limit,
            before=before, metadata=body.metadata))


# Store ------------------------------------------------------------------------------------------------------

class StoreItems(LangGraphView):
    key_scope = "chat"

    def get(self, request):
        query = self.query(StoreItemGet)
        item = store.store_item_get(owner=request.user, namespace=query.labels(), key=query.key)
        return json_null() if item is None else Response(store.item_as_dict(item))  # none: null, as LangGraph's

    def put(self, request):
        body = self.body(StoreItemPut)
        store.store_item_put(owner=request.user, namespace=body.namespace, key=body.key, value=body.value,
                             index=body.index, api_key=request.auth)
        return Response(status=NO_CONTENT)

    def delete(self, request):
        body = self.body(StoreItemKey)
        store.store_item_delete(owner=request.user, namespace=body.namespace, key=body.key)
        return Response(status=NO_CONTENT)


class StoreSearchView(LangGraphView):
    key_scope = READ

    def post(self, request):
        body = self.body(StoreSearch)
        return Response({"items": [{**store.item_as_dict(item), "score": score}
                                   for item, score in store.store_item_search(
                                       owner=request.user, api_key=request.auth, **body.model_dump())]})


class StoreNamespacesView(LangGraphView):
    key_scope = READ

    def post(self, request):
        body = self.body(StoreNamespaces)
        return Response({"namespaces": store.store_namespaces(owner=request.user, **body.model_dump())})


# --- the thread streaming protocol (agent_server.protocol) ----------------------------------------------------------

class ThreadCommands(LangGraphView):
    """Its commands start runs (run.start) or answer them (input.respond), billed like every run; a body that is
    not a command is answered in the protocol's own error envelope."""

    key_scope = "runs"
    starts_runs = True
    parser_classes = (BodyBytes,)

    def post(self, request, thread_id):
        raw = request.data if isinstance(request.data, bytes) else b""
        try:
            command = json_parse(raw or b"null")
        except ParseError:
            command = None
        status, envelope, feed = command_answer(owner=request.user, thread_id=thread_id, command=command,
                                                api_key=request.auth)
        if feed is not None:
            feed_drained(feed)
        return Response(envelope, status=status)


class ThreadEventStream(LangGraphView):
    key_scope = READ

    def post(self, request, thread_id):
        wanted = self.body(EventStreamFilter)
        if not _is_uuid(str(thread_id)):
            raise ApiError(404, "Thread not found")
        thread_stream_check(owner=request.user, thread_id=thread_id)

        async def frames():
            events = thread_events(owner=request.user, thread_id=thread_id, channels=wanted.channels,
                                   namespaces=wanted.namespaces, depth=wanted.depth, since=wanted.since)
            try:
                async for event in events:
                    yield HEARTBEAT if event is None else sse_frame(event)
            finally:
                await events.aclose()

        return event_stream_response(frames(), cache_control="no-store")


class ThreadJoinStream(LangGraphView):
    """client.threads.join_stream: the thread's runs from now on (or after `Last-Event-ID`) as one stream, in the
    thread stream modes asked for (`stream_modes`, as the stock server reads them, or `stream_mode`, as the SDKs
    send them), until the client leaves (agent_server.thread_stream)."""

    def get(self, request, thread_id):
        conversation = threads.thread_get(user=request.user, thread_id=thread_id)
        params = request.query_params
        modes = thread_stream_modes([*params.getlist("stream_modes"), *params.getlist("stream_mode")])
        resume = thread_resume_point(conversation=conversation, last_event_id=request.headers.get("Last-Event-ID"))
        return event_stream_response(thread_stream(conversation_id=conversation.pk, owner_id=conversation.owner_id,
                                                   modes=modes, resume=resume))


# --- MCP (agent_server.mcp) -------------------------------------------------------------------------------------

class McpEndpoint(LangGraphView):
    """MCP's Streamable HTTP transport, stateless: one JSON-RPC message per POST, answered as JSON. No server-sent
    stream and no session, so GET and DELETE are 405 (naming POST). A tool call needs the key scope "runs" and
    takes one from the run throttle; the rest reads."""

    parser_classes = (BodyBytes,)

    def post(self, request):
        return mcp.mcp_answer(request, user=request.user)

    @property
    def key_scope(self) -> str:
        return mcp.mcp_scope(self.request)

    @property
    def starts_runs(self) -> bool:
        return mcp.mcp_starts_run(self.request)
