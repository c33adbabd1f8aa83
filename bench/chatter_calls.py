"""Every call the benchmarks make into Chatter's own code, in one place, so that a change of the run path
(services, recorder, realtime) means adapting this module only. Everything else in bench/ talks to Chatter
as its users do: `manage.py`, HTTP and websockets.

Nothing is imported at module level: the LangGraph peers' venvs import this module (`BareChat`) without
the project's web stack, and the callers of the rest set Django up first (`django_setup`).

Who uses what:
- B1 (in one process, by definition): `BareChat`, `sync_turn`, `turn_render`, `conversation_history`,
  `RUN_PATH_FILES`, `B1_PHASE_MARKS`/`B1_HOOKS_CLASS`/`B1_HOOKS`/`B1_MARKED_FUNCTIONS`
  (where its phase marks go);
- B2's references: `local_model_first_token`, `stream_turn`, `BareChat`; its floor's model: `local_model`;
- B3/B4's publishers: `broadcast` (synchronous: when it returns, the event has left), `asgi_application`;
- B5's peers: `BareChat` (the graph they serve);
- B6's data loader: `call_price`, `call_cost`, `usage_rollups_rebuild`, `usage_drift`, `usage_request_sql`,
  `api_token_key`;
- B7's checks: `invariant_i1`, `invariant_i2`, `invariant_i3`, `invariant_i6`, `aggregates_drift`;
- B8's checks: `gateway_runs`, `gateway_i3_failures`, `invariant_i2`, `aggregates_drift`; its in-process profile:
  `gateway_client`, `GATEWAY_PATH`;
- B11's workflow side: `mcp_tool_path`; its profile: `mcp_pool_run`; `direct kept`'s client: `mcp_kept_alive_http_client`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal


def django_setup(env: dict) -> None:
    """Django in this process with exactly the environment a server on that database gets."""
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    import django

    django.setup()


def bench_user(username: str = "bench"):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


# --- the engine without recording (B1's bare side, the graph B5's peers serve) ------------------------------
class BareChat:
    """The built-in universal_chat graph compiled by Chatter's engine (the very object its compile cache hands
    the engine), with the run config a chat turn resolves, run with `NullHooks`: LangGraph, the node
    behaviours and the model, no database, no events. Needs only settings (no django.setup())."""

    def __init__(self) -> None:
        from langchain_core.messages import AIMessage, HumanMessage

        from engine.compile import MAX_STEPS, graph_compile
        from engine.config import config_resolve
        from engine.graph import parse_graph
        from engine.hooks import NullHooks
        from engine.runtime import RunContext
        from workflows.builtins import BUILTIN_TEMPLATES
        from workflows.engine_setup import engine_configure

        engine_configure()  # the engine's settings from Django's, as a process's start hands them over
        template = next(t for t in BUILTIN_TEMPLATES if t["key"] == "universal_chat")
        self.graph = parse_graph(template["graph"])
        self.config = config_resolve(template["params"], {})
        self.memory_window = self.config["memory_window"]
        self.compiled = graph_compile(self.graph)
        self._human, self._ai, self._max_steps = HumanMessage, AIMessage, MAX_STEPS
        self._context, self._null_hooks = RunContext, NullHooks

    def hooks(self):
        """Hooks that record nothing (what `invoke` uses unless given others)."""
        return self._null_hooks()

    def invoke(self, message: str, history: list[tuple[str, str]] | None = None, hooks=None):
        """One turn; `history` ((role, content), oldest first) is what the memory node reads. Returns the
        final state and the run context (its usage)."""
        hooks = hooks if hooks is not None else self._null_hooks()
        if history is not None:
            messages = [(self._human if role == "user" else self._ai)(content) for role, content in history]
            hooks.history = lambda limit: list(messages[-limit:])
        ctx = self._context(config=self.config, hooks=hooks)
        state = {"messages": [self._human(message)], "variables": {}, "errors": []}
        state = self.compiled.invoke(state, config={"configurable": {"chatter": ctx},
                                                    "recursion_limit": self._max_steps})
        return state, ctx

    def turn(self, message: str) -> dict:
        """The reply and its token usage."""
        state, ctx = self.invoke(message)
        return {"reply": self.reply(state), "usage": ctx.usage.token_fields()}

    def reply(self, state) -> str:
        found = [m for m in state["messages"] if isinstance(m, self._ai)]
        return found[-1].content if found else ""

    def first_token(self, message: str) -> float:
        """Seconds from invoking the turn to the model's first token reaching the hooks (read to its end)."""
        hooks, first = self._null_hooks(), []
        started = time.perf_counter()
        hooks.token = lambda node, text, **_: first or first.append(time.perf_counter() - started)
        self.invoke(message, hooks=hooks)
        if not first:
            raise RuntimeError("the bare graph streamed no token")
        return first[0]

    def same_graph_as(self, graph: dict) -> bool:
        """Whether the engine runs this very compiled object for a run of `graph`."""
        from engine.compile import graph_compile
        from engine.graph import parse_graph

        return graph_compile(parse_graph(graph)) is self.compiled


# --- chat turns through the services (B1, B2's in-process reference) ---------------------------------------
def sync_turn(*, user, message: str, conversation_id=None):
    """What POST /api/v1/chat/ {"message": …} runs for a sync turn, without HTTP: the ended execution."""
    from workflows.services.run_requests import ChatRequest
    from workflows.services.runs import execution_run_now

    return execution_run_now(ChatRequest(owner=user, message=message, conversation_id=conversation_id, config={}))


def turn_render(execution) -> dict:
    """What the chat view renders for a finished sync turn."""
    from workflows.api.run_serializers import RunResultSerializer

    return RunResultSerializer(execution).data


def conversation_history(conversation_id, limit: int) -> list[tuple[str, str]]:
    """What a continuing turn's memory node reads: (role, content), oldest first."""
    from conversations.selectors import conversation_history as history

    return history(conversation_id=conversation_id, limit=limit)


def stream_turn(*, user, message: str) -> Iterator[tuple[str, dict]]:
    """A streamed chat turn in this process, without HTTP, through the very service the chat view calls
    (`execution_start_streamed`: the run written already running, run on the runner's threads, its feed listening
    since before it started): ("created", {}) once it returns, then ("event", envelope) for every event to the
    end, read from the feed on an event loop as the SSE response reads it."""
    from workflows.realtime import feed_blocking
    from workflows.services.run_requests import ChatRequest
    from workflows.services.runs import execution_start_streamed

    _, feed = execution_start_streamed(ChatRequest(owner=user, mode="stream", message=message, config={}))
    yield "created", {}
    for envelope in feed_blocking(feed):
        yield "event", envelope


def local_model(delay_ms: int):
    """The local model as universal_chat's model node calls it (its tools bound), `delay_ms` between tokens."""
    from engine.local_model import LocalChatModel
    from engine.tools import DEFAULT_TOOLS, TOOLS

    model = LocalChatModel(model_name="local-echo-1", token_delay_s=delay_ms / 1000)
    return model.bind_tools([TOOLS[name] for name in DEFAULT_TOOLS])


def local_model_first_token(message: str, delay_ms: int) -> float:
    """Seconds from building the local model (local_model) and calling stream() to its first non-empty chunk."""
    from langchain_core.messages import HumanMessage

    started = time.perf_counter()
    stream = local_model(delay_ms).stream([HumanMessage(message)])
    try:
        for chunk in stream:
            if chunk.content:
                return time.perf_counter() - started
    finally:
        stream.close()
    raise RuntimeError("the model streamed no text")


# The files on a sync turn's path: B1 prints those that differ from HEAD (others edit them while it measures).
RUN_PATH_FILES = ("workflows/services/run_requests.py", "workflows/services/runs.py", "workflows/runner.py",
                  "workflows/ending.py", "workflows/run_messages.py", "workflows/recorder.py", "workflows/run_reads.py",
                  "workflows/trace_rows.py", "workflows/cancels.py", "workflows/run_tools.py", "workflows/spending.py",
                  "workflows/ledger.py", "workflows/checkpointer.py",
                  "workflows/events.py", "workflows/hub.py", "workflows/pricing.py", "engine/compile.py",
                  "engine/runtime.py", "engine/hooks.py", "engine/nodes.py",
                  "conversations/services.py", "conversations/signals.py", "analytics/services.py",
                  "analytics/receivers.py", "analytics/selectors.py", "audit/services.py")

# Where B1's instrumented pass puts its phase marks: (module, function) whose call starts a phase, and the
# recorder class whose hook methods it times. Names missing after a change are skipped (and said so).
B1_PHASE_MARKS = {"validate (run_plan)": ("workflows.services.runs", "run_plan"),
                  "write (run_write)": ("workflows.services.runs", "run_write"),
                  "run set-up": ("workflows.runner", "run"),
                  "graph": ("workflows.runner", "graph_run"),
                  "finish": ("workflows.runner", "execution_finish")}  # (as the runner calls it)
B1_MARKED_FUNCTIONS = {"audit rows": (("workflows.recorder", "audit_queue"),)}
B1_HOOKS_CLASS = ("workflows.recorder", "ExecutionRecorder")
B1_HOOKS = ("node_started", "node_finished", "llm_called", "tool_called", "token", "limit_exceeded",
            "cancel_requested", "history", "documents", "started", "flush")


# --- events (B3/B4 publishers, B1) ------------------------------------------------------------------------
def broadcast(envelope: dict, *, owner_id) -> None:
    """Publish one event envelope as a run does (to its run's and its owner's watchers, here and elsewhere)."""
    from workflows.events import events_publish

    events_publish([envelope], owner_id=owner_id)


def asgi_application():
    from chatter_project.asgi import application

    return application


# --- analytics (B6) -----------------------------------------------------------------------------------------
def call_price(provider: str, model: str):
    from analytics.selectors import price_for_call

    return price_for_call(provider=provider, model=model)


def call_cost(price, *, prompt: int, completion: int, cached: int = 0) -> Decimal:
    """What the engine books for one LLM call at `price`."""
    from engine.usage import Usage, cost_for_usage

    return cost_for_usage(Usage(prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached),
                          price)


def api_token_key(user) -> str:
    """A new API token's key for `user` (B6's clients)."""
    from keys.services import api_token_create

    return api_token_create(user=user)[1]


def usage_rollups_rebuild() -> int:
    from analytics.services import usage_rollups_rebuild as rebuild

    return rebuild()


def usage_drift() -> list:
    from analytics.services import usage_drift as drift

    return drift()


def usage_request_sql(user, params: dict) -> list[str]:
    """The SQL one GET /api/v1/analytics/usage/ runs, as its view runs it (in process, authenticated)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIRequestFactory, force_authenticate

    from analytics.api.views import UsageView

    request = APIRequestFactory().get("/api/v1/analytics/usage/", params, HTTP_HOST="127.0.0.1")
    force_authenticate(request, user=user)
    with CaptureQueriesContext(connection) as queries:
        response = UsageView.as_view()(request)
        response.render()
    if response.status_code != 200:
        raise RuntimeError(response.content)
    return [query["sql"] for query in queries.captured_queries]


# --- invariants (B7) ------------------------------------------------------------------------------------------
def invariant_i1(conversation_id) -> None:
    from conversations.models import Conversation
    from tests import invariants

    invariants.assert_i1(Conversation.objects.get(pk=conversation_id))


def invariant_i2() -> None:
    from tests import invariants

    invariants.assert_i2()


def invariant_i3(execution) -> None:
    from tests import invariants

    invariants.assert_i3(execution)


def invariant_i6(execution) -> None:
    from tests import invariants

    invariants.assert_seq_gapless(execution)


def aggregates_drift() -> list:
    from analytics.services import aggregates_drift as drift

    return drift()


# --- the gateway's record (B8) --------------------------------------------------------------------------------
def _gateway_executions():
    from workflows.models import WorkflowExecution

    return WorkflowExecution.objects.filter(workflow_type=WorkflowExecution.Type.GATEWAY)


def gateway_runs() -> dict:
    """Gateway runs: how many, how many completed, and their tokens summed."""
    from django.db.models import Count, Q, Sum

    from workflows.models import WorkflowExecution

    found = _gateway_executions().aggregate(
        runs=Count("id"), completed=Count("id", filter=Q(status=WorkflowExecution.Status.COMPLETED)),
        prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"))
    return {k: v or 0 for k, v in found.items()}


def gateway_i3_failures() -> list[str]:
    """The gateway runs whose figures are not the sums over their nodes (I3), by id."""
    from tests import invariants

    failed = []
    for execution in _gateway_executions().iterator():
        try:
            invariants.assert_i3(execution)
        except AssertionError:
            failed.append(str(execution.pk))
    return failed


GATEWAY_PATH = "/v1/chat/completions"


def gateway_client(user):
    """Django's test client (the whole request stack, in this thread) with a new key of `user`'s with the gateway
    scope, as `Authorization: Bearer`."""
    from django.test import Client

    from keys.services import api_token_create

    key = api_token_create(user=user, name="b8", scopes=["gateway"])[1]
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="127.0.0.1")


# --- B11: an MCP tool call as a JSON workflow's tools node makes it --------------------------------------------
def mcp_tool_path(user, url: str, name: str = "bench"):
    """`url` registered as the MCP server `name` of `user`, and a run of theirs allowed its tools: returns
    `call(a, b)`, which calls `<name>__add` through the run's tool path (workflows.run_tools.RunTools.run) and
    returns its wall time in seconds."""
    from tools.services import mcp_server_create
    from workflows.run_tools import RunTools
    from workflows.services.run_requests import ChatRequest
    from workflows.services.runs import execution_create

    mcp_server_create(owner=user, name=name, url=url)
    execution = execution_create(ChatRequest(owner=user, message="add", config={"allowed_tools": [f"{name}__*"]}))
    tools = RunTools(execution)

    def call(a, b) -> float:
        started = time.perf_counter()
        outcome = tools.run(f"{name}__add", {"a": a, "b": b}, timeout_s=30)
        elapsed = time.perf_counter() - started
        if not outcome.ok:
            raise RuntimeError(outcome.error)
        return elapsed

    return call


def mcp_kept_alive_http_client():
    """An httpx client for the SDK's transport that keeps its connections from call to call as Chatter's MCP client
    does (tools.mcp_client.ConnectionKeeping), without Chatter's destination checks: B11's `direct kept`."""
    import httpx

    from tools.mcp_client import LIMITS, ConnectionKeeping

    return httpx.AsyncClient(transport=ConnectionKeeping(httpx.AsyncHTTPTransport(limits=LIMITS)),
                             timeout=httpx.Timeout(30, read=300))


def mcp_pool_run(fn, *args):
    """Run the coroutine function `fn(*args)` on this process's MCP pool's loop and wait (B11's profile of it)."""
    from tools.mcp_pool import mcp_pool

    return mcp_pool().call(fn, *args)


def mcp_sessions_close() -> None:
    """Close the kept MCP sessions of this process (before the server they are open with stops)."""
    from tools.mcp_pool import mcp_pool_close_all

    mcp_pool_close_all()
