"""An API key's scopes, the run throttle and the concurrent-run limit hold on every surface: /langgraph/ (its
error shape: {"detail": …}, 403 / 429 with Retry-After, as LangGraph's SDK maps them) and /v1/ (OpenAI's), as on
/api/v1/. A key without the scope a route needs gets a 403 and writes nothing; with it, the route works."""
from __future__ import annotations

import json
import time

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.db.models import Q
from django.test import Client

from agent_server.models import AgentCron, StoreItem
from gateway.limits import key_limits_remove, key_limits_set
from conversations.models import Conversation, Message
from keys.models import API_KEY_SCOPES
from tests.clock import inside_one_minute
from tests.factories import ApiTokenFactory
from workflows.models import WorkflowExecution, WorkflowSchedule
from workflows.services.run_requests import AgentRunRequest
from workflows.services.runs import execution_create

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
RUN = {"assistant_id": "universal_chat", "input": TURN}
CRON = {"assistant_id": "universal_chat", "schedule": "0 7 * * *", "input": TURN}
ITEM = {"namespace": ["notes"], "key": "k1"}
MCP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",  # an MCP tool call starts a run
            "params": {"name": "universal_chat", "arguments": {"message": "What is 12*7?"}}}


@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()  # throttle counters are keyed by user id, and ids repeat across tests


def key_with(user, *scopes: str) -> str:
    return ApiTokenFactory(user=user, name="test", scopes=list(scopes)).key


def key_without(user, scope: str) -> str:
    return key_with(user, *(s for s in API_KEY_SCOPES if s != scope))


def call(method: str, path: str, key: str, body=None, *, header: str = "x-api-key"):
    value = key if header == "x-api-key" else f"Bearer {key}"
    return Client().generic(method, path, data=b"" if body is None else json.dumps(body),
                            content_type="application/json", headers={header: value})


def world() -> tuple:
    """Every row these routes could write, and the fields they could change."""
    return (sorted((str(c.pk), c.title, c.metadata) for c in Conversation.objects.all()),
            Message.objects.count(),
            sorted((str(e.pk), e.status, e.cancel_requested) for e in WorkflowExecution.objects.all()),
            sorted((s.namespace, s.key, s.value) for s in StoreItem.objects.all()),
            sorted((str(s.pk), s.cron, s.enabled) for s in WorkflowSchedule.objects.all()),
            AgentCron.objects.count())


@pytest.fixture
def things(alice):
    """Alice's thread with a finished run, a pending run to cancel, a store item and a cron, made as she would."""
    owner = key_with(alice, *API_KEY_SCOPES)
    thread = call("POST", "/langgraph/threads", owner, {"metadata": {"team": "a"}}).json()["thread_id"]
    done = call("POST", f"/langgraph/threads/{thread}/runs/wait", owner, RUN)
    assert done.status_code == 200, done.content
    finished = WorkflowExecution.objects.get(conversation_id=thread)
    waiting = call("POST", "/langgraph/threads", owner, {}).json()["thread_id"]
    pending = execution_create(AgentRunRequest(owner=alice, chat=True, conversation_id=waiting, message="later",
                                               mode="background", after_seconds=3600))
    assert call("PUT", "/langgraph/store/items", owner, {**ITEM, "value": {"n": 1}}).status_code == 204
    cron = call("POST", "/langgraph/runs/crons", owner, CRON).json()["cron_id"]
    return {"thread": thread, "finished": finished.pk, "waiting": waiting, "pending": pending.pk, "cron": cron}


# (method, path, body, the scope it needs, the status it answers with that scope)
ROUTES = [
    ("POST", "/langgraph/threads", {}, "chat", 200),
    ("PATCH", "/langgraph/threads/{thread}", {"metadata": {"team": "b"}}, "chat", 200),
    ("POST", "/langgraph/threads/{thread}/copy", None, "chat", 200),
    ("POST", "/langgraph/threads/{thread}/state", {"values": {"messages": []}}, "chat", 200),  # the graph's own state
    ("DELETE", "/langgraph/threads/{thread}", None, "chat", 204),
    ("PUT", "/langgraph/store/items", {**ITEM, "value": {"n": 2}}, "chat", 204),
    ("DELETE", "/langgraph/store/items", ITEM, "chat", 204),
    ("POST", "/langgraph/runs/wait", RUN, "runs", 200),
    ("POST", "/langgraph/runs/stream", RUN, "runs", 200),
    ("POST", "/langgraph/runs", RUN, "runs", 200),
    ("POST", "/langgraph/threads/{thread}/runs/wait", RUN, "runs", 200),
    ("POST", "/langgraph/threads/{thread}/runs/stream", RUN, "runs", 200),
    ("POST", "/langgraph/threads/{thread}/runs", RUN, "runs", 200),
    ("POST", "/langgraph/threads/{thread}/runs/{finished}/cancel", None, "runs", 409),  # it has ended
    ("POST", "/langgraph/threads/{waiting}/runs/{pending}/cancel", None, "runs", 200),
    ("DELETE", "/langgraph/threads/{thread}/runs/{finished}", None, "runs", 422),  # runs are kept
    ("GET", "/langgraph/threads/{thread}/runs/{finished}/stream?cancel_on_disconnect=true", None, "runs", 200),
    ("POST", "/langgraph/runs/crons", CRON, "runs", 200),
    ("POST", "/langgraph/threads/{thread}/runs/crons", CRON, "runs", 200),
    ("PATCH", "/langgraph/runs/crons/{cron}", {"schedule": "0 9 * * *"}, "runs", 200),
    ("DELETE", "/langgraph/runs/crons/{cron}", None, "runs", 204),
    ("POST", "/langgraph/mcp", MCP_CALL, "runs", 200),
    ("POST", "/v1/chat/completions", {"model": "local-echo-1", "messages": TURN["messages"]}, "gateway", 200),
    ("GET", "/v1/models", None, "gateway", 200),
]
ROUTE_IDS = [f"{method} {path.split('?')[0]}" for method, path, *_ in ROUTES]


@pytest.mark.parametrize(("method", "path", "body", "scope", "works"), ROUTES, ids=ROUTE_IDS)
def test_it_refuses_a_key_without_the_scope_a_route_needs_and_writes_nothing(
        alice, things, method, path, body, scope, works):
    path = path.format(**things)
    before = world()

    response = call(method, path, key_without(alice, scope), body,
                    header="authorization" if path.startswith("/v1/") else "x-api-key")

    assert response.status_code == 403, response.content
    message = response.json()["error"]["message"] if path.startswith("/v1/") else response.json()["detail"]
    assert f"({scope})" in message
    assert world() == before


@pytest.mark.parametrize(("method", "path", "body", "scope", "works"), ROUTES, ids=ROUTE_IDS)
def test_a_key_with_only_the_scope_a_route_needs_may_use_it(alice, things, method, path, body, scope, works):
    path = path.format(**things)

    response = call(method, path, key_with(alice, scope), body,
                    header="authorization" if path.startswith("/v1/") else "x-api-key")

    assert response.status_code == works, response.content
    if response.streaming:  # read to its end (an SSE stream of an async view: an async iterator)
        assert async_to_sync(read_all)(response.streaming_content)
    runs_ended()


async def read_all(chunks) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def runs_ended(timeout: float = 30) -> None:
    """Wait for the runs a route started (a stream read to its end, a background run) to end: the next test's
    flush must not race them."""
    deadline = time.monotonic() + timeout
    going = WorkflowExecution.objects.filter(Q(status="running") | Q(status="pending", run_after__isnull=True))
    while going.exists():
        assert time.monotonic() < deadline, list(going.values_list("id", "status"))
        time.sleep(0.05)


@pytest.mark.parametrize("path", ["/langgraph/threads/{thread}", "/langgraph/threads/{thread}/state",
                                  "/langgraph/threads/{thread}/runs", "/langgraph/runs/crons/search"])
def test_it_refuses_reads_to_a_key_without_the_read_scope(alice, things, path):
    method = "POST" if path.endswith("search") else "GET"

    refused = call(method, path.format(**things), key_without(alice, "read"), {})
    allowed = call(method, path.format(**things), key_with(alice, "read"), {})

    assert refused.status_code == 403 and "(read)" in refused.json()["detail"]
    assert allowed.status_code == 200, allowed.content


# --- the run throttle and the concurrent-run limit ---------------------------------------------------------
RUN_STARTS = [
    ("/api/v1/chat/", {"message": "hi"}, "authorization"),
    ("/langgraph/runs/wait", RUN, "x-api-key"),
    ("/langgraph/runs/stream", RUN, "x-api-key"),
    ("/langgraph/runs", RUN, "x-api-key"),
    ("/langgraph/threads/{thread}/runs/wait", RUN, "x-api-key"),
    ("/langgraph/mcp", MCP_CALL, "x-api-key"),
    ("/v1/chat/completions", {"model": "local-echo-1", "messages": TURN["messages"]}, "authorization"),
]


def start(path: str, body: dict, header: str, key: str):
    if header == "authorization":
        return Client().post(path, body, content_type="application/json", headers={"authorization": f"Token {key}"})
    return call("POST", path, key, body)


@pytest.mark.parametrize(("path", "body", "header"), RUN_STARTS, ids=[p for p, *_ in RUN_STARTS])
def test_the_run_throttle_is_one_count_across_surfaces_and_a_429_on_each(alice, run_rate, path, body, header):
    key = key_with(alice, *API_KEY_SCOPES)
    thread = call("POST", "/langgraph/threads", key, {}).json()["thread_id"]
    path = path.format(thread=thread)
    run_rate("2/min")
    assert start("/api/v1/chat/", {"message": "one"}, "authorization", key).status_code == 201
    assert call("POST", "/langgraph/runs/wait", key, RUN).status_code == 200  # the same allowance
    before = world()

    response = start(path, body, header, key)

    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) > 0
    assert "throttled" in str(response.json()).lower()
    assert world() == before
    assert call("GET", f"/langgraph/threads/{thread}", key).status_code == 200  # reads are not throttled


@pytest.mark.parametrize(("path", "body", "header"), RUN_STARTS, ids=[p for p, *_ in RUN_STARTS])
def test_the_concurrent_run_limit_is_a_429_on_every_surface(alice, settings, path, body, header):
    key = key_with(alice, *API_KEY_SCOPES)
    thread = call("POST", "/langgraph/threads", key, {}).json()["thread_id"]
    path = path.format(thread=thread)
    settings.CHATTER_MAX_CONCURRENT_RUNS = 1
    execution_create(AgentRunRequest(owner=alice, template="universal_chat", message="later", mode="background",
                                     after_seconds=3600))
    before = world()

    response = start(path, body, header, key)

    assert response.status_code == 429, response.content
    assert "at most 1 runs at once" in str(response.json())
    assert world() == before


def test_a_key_of_another_user_does_not_share_alices_allowance(alice, bob, run_rate):
    run_rate("1/min")
    assert call("POST", "/langgraph/runs", key_with(alice, "runs"), RUN).status_code == 200
    assert call("POST", "/langgraph/runs", key_with(alice, "runs"), RUN).status_code == 429

    assert call("POST", "/langgraph/runs", key_with(bob, "runs"), RUN).status_code == 200
    runs_ended()


# --- a key's limits (gateway.limits: allowed models, requests and tokens per minute) --------------------------
@pytest.fixture
def limited_key():
    """Makes a key with every scope and the limits staff set on it, with the rest of the test inside one counting
    window (counts are per calendar minute: gateway.limits.WINDOW_S). The limits are removed after the test, so
    this process does not keep them for a key of the next test that gets the same id."""
    made = []

    def make(user, **limits) -> str:
        token = ApiTokenFactory(user=user, name="limited", scopes=list(API_KEY_SCOPES))
        key_limits_set(api_key=token, **limits)
        made.append(token)
        inside_one_minute()
        return token.key

    yield make
    for token in made:
        key_limits_remove(api_key=token)


@pytest.mark.parametrize(("path", "body", "header"), RUN_STARTS, ids=[p for p, *_ in RUN_STARTS])
def test_item_15_a_keys_allowed_models_hold_on_every_surface(alice, limited_key, path, body, header):
    key = limited_key(alice, allowed_models=["gpt-4o-mini"])
    thread = call("POST", "/langgraph/threads", key, {}).json()["thread_id"]
    before = world()

    response = start(path.format(thread=thread), body, header, key)

    assert response.status_code == 403 or "model_not_allowed" in str(response.json()), response.content
    assert "gpt-4o-mini" in str(response.json())
    assert world() == before


@pytest.mark.parametrize(("path", "body", "header"), RUN_STARTS, ids=[p for p, *_ in RUN_STARTS])
def test_item_15_a_keys_requests_per_minute_are_one_count_across_surfaces(alice, limited_key, path, body,
                                                                          header):
    key = limited_key(alice, rpm=2)
    thread = call("POST", "/langgraph/threads", key, {}).json()["thread_id"]
    assert start("/api/v1/chat/", {"message": "one"}, "authorization", key).status_code == 201
    assert call("POST", "/langgraph/runs/wait", key, RUN).status_code == 200  # the same two a minute
    before = world()

    response = start(path.format(thread=thread), body, header, key)

    assert response.status_code == 429 or "rate_limit_exceeded" in str(response.json()), response.content
    assert "2 requests per minute" in str(response.json())
    assert world() == before
    assert start("/api/v1/chat/", {"message": "hi"}, "authorization", key_with(alice, "chat")).status_code == 201
