"""Issue 46: a chat completion of the `openai` provider (not routed, not kept in a conversation) goes straight
through (gateway.passthrough): the body as the client sent it, the answer as the upstream gave it, and still one run
with exactly the records of any gateway call; key revocation and limit changes hold from the next call; racing calls
are held to a key's requests per minute and a budget; an upstream that dies mid-stream or does not answer in time
ends the call failed, accounted for."""
import asyncio
import base64
import http.server
import json
import multiprocessing
import subprocess
import sys
import threading
from decimal import Decimal
from io import StringIO

import httpx
import openai
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from budgets.models import BudgetPeriod
from core.cache import hot_reads
from engine.usage import estimate_openai_prompt_tokens
from gateway.limits import key_limits_remove, key_limits_set
from gateway.upstream import upstream_call, upstream_session
from keys.services import api_key_revoke
from tests.clock import inside_one_minute
from tests.factories import ApiTokenFactory, BudgetFactory, ModelPriceFactory
from tests.fixtures_server import ROOT, refusing_port
from tests.gateway.conftest import client
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, LLMCall, NodeExecution, WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
ASK = [{"role": "user", "content": "What is 12*7?"}]


def assert_recorded(execution_id, *, estimated: bool = False) -> WorkflowExecution:
    """The records of a gateway run: its three nodes, one LLM call, its events from start to end, its invariants."""
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.workflow_type == "gateway" and execution.llm_calls == 1
    (call,) = LLMCall.objects.filter(execution=execution)
    assert (call.total_tokens, call.cost, call.estimated) == (execution.total_tokens, execution.cost, estimated)
    assert (call.node_execution.execution_id, call.node_execution.node_id) == (execution.pk, "model")
    nodes = list(NodeExecution.objects.filter(execution=execution).order_by("started_at").values_list(
        "node_id", "status"))
    events = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("event", flat=True))
    assert events[0] == "workflow_started" and "token_usage" in events
    if execution.status == "completed":
        assert nodes == [("start", "completed"), ("model", "completed"), ("end", "completed")]
        assert events[-1] == "workflow_completed"
    else:
        assert nodes == [("start", "completed"), ("model", "failed")] and events[-1] == "workflow_failed"
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 1 (SystemExit) on any drift
    return execution


def test_item_46_passthrough_sync_and_streamed_with_exact_usage(gateway, openai_stub):
    openai_stub.reply(content="84.", usage=USAGE).reply(content="Eighty four.", usage=USAGE)
    sent = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 50, "temperature": 0.2, "seed": 3}

    whole = httpx.post(f"{gateway.v1}/chat/completions", json=sent, timeout=120,  # (a server's first call loads it)
                       headers={"Authorization": f"Bearer {gateway.key}"})
    assert openai_stub.last_request.body == sent  # the body as the client sent it
    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True) as raw:
        chunks = list(raw.parse())
        streamed_id = raw.headers["x-chatter-execution"]

    assert whole.status_code == 200
    body = whole.json()
    assert body["choices"][0]["message"]["content"] == "84."
    execution = assert_recorded(whole.headers["x-chatter-execution"])
    assert body["id"] == f"chatcmpl-{execution.pk.hex}" and body["usage"]["total_tokens"] == 30
    assert (execution.prompt_tokens, execution.completion_tokens) == (21, 9)
    assert whole.headers["x-chatter-cost"] == f"{execution.cost:.8f}" and execution.cost > 0
    # A stream without include_usage asks the upstream for it (to account for it) and gives the client none.
    assert openai_stub.last_request.body["stream_options"] == {"include_usage": True}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Eighty four."
    assert all(c.usage is None for c in chunks)
    assert {c.id for c in chunks} == {f"chatcmpl-{streamed_id.replace('-', '')}"}
    assert assert_recorded(streamed_id).total_tokens == 30


def test_item_46_a_killed_upstream_mid_stream_ends_the_stream_with_an_error_and_a_failed_accounted_call(
        gateway, openai_stub):
    words = " ".join(f"word{i}" for i in range(20))
    openai_stub.reply(content=words, usage=USAGE, fault="reset", fault_after=4)

    with httpx.stream("POST", f"{gateway.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "gpt-4o-mini", "messages": ASK, "stream": True,
                            "stream_options": {"include_usage": True}}) as response:
        frames = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        execution_id = response.headers["x-chatter-execution"]

    assert response.status_code == 200 and "[DONE]" not in frames
    last = json.loads(frames[-1])
    assert last["error"]["type"] == "api_error" and execution_id in last["error"]["message"]
    streamed = "".join(json.loads(f)["choices"][0]["delta"].get("content") or "" for f in frames[:-1])
    assert streamed and words.startswith(streamed)
    execution = assert_recorded(execution_id, estimated=True)  # what it produced, estimated: no usage came
    assert (execution.status, execution.error_type) == ("failed", "provider_error")
    assert execution.output_data["content"] == streamed and execution.completion_tokens > 0


@pytest.mark.parametrize("fault_after", [0, 1], ids=["its-head", "its-role-chunk"])
def test_a_stream_that_fails_before_its_first_word_is_answered_whole_so_the_client_retries_it(gateway, openai_stub,
                                                                                              fault_after):
    """An upstream that answered its stream's head (and maybe the role chunk, no word in it) then reset: the call is
    answered whole with its status, as docs/api/gateway.md (Errors) says, so OpenAI's client retries it (an error
    event in a 200 stream it never retries)."""
    openai_stub.reply(content="Eighty four.", usage=USAGE, fault="reset", fault_after=fault_after)
    openai_stub.reply(content="Eighty four.", usage=USAGE)

    retrying = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=1, timeout=30)
    chunks = list(retrying.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Eighty four."
    assert len(openai_stub.requests) == 2
    failed, answered = WorkflowExecution.objects.order_by("created_at")
    assert (failed.status, failed.error_type, answered.status) == ("failed", "provider_error", "completed")
    assert_recorded(failed.pk, estimated=True)  # the upstream took the prompt: estimated
    assert chunks[-1].usage.total_tokens == assert_recorded(answered.pk).total_tokens == 30


def test_item_46_revocation_and_limit_changes_take_effect_on_the_next_call(gateway, openai_stub, alice):
    openai_stub.always(content="84.", usage=USAGE)
    key = ApiTokenFactory(user=alice, name="app")  # every scope: it manages the other key
    other = ApiTokenFactory(user=alice, name="other", scopes=["gateway"])
    call = openai.OpenAI(base_url=gateway.v1, api_key=other.key, max_retries=0, timeout=30).chat.completions
    owner = httpx.Client(base_url=gateway.base_url, headers={"Authorization": f"Bearer {key.key}"}, timeout=30)

    assert call.create(model="gpt-4o-mini", messages=ASK).choices[0].message.content == "84."  # limits read
    changed = owner.put(f"/api/v1/keys/{other.uid}/limits/", json={"allowed_models": ["gpt-4o"]})
    assert changed.status_code == 200, changed.text
    with pytest.raises(openai.PermissionDeniedError) as not_allowed:
        call.create(model="gpt-4o-mini", messages=ASK)
    assert owner.put(f"/api/v1/keys/{other.uid}/limits/", json={"rpm": 1}).status_code == 200
    call.create(model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.RateLimitError):
        call.create(model="gpt-4o-mini", messages=ASK)
    assert owner.delete(f"/api/v1/keys/{other.uid}/limits/").status_code in (200, 204)
    call.create(model="gpt-4o-mini", messages=ASK)
    api_key_revoke(token=other, actor=alice)
    with pytest.raises(openai.AuthenticationError):
        call.create(model="gpt-4o-mini", messages=ASK)

    assert not_allowed.value.code == "model_not_allowed"
    assert WorkflowExecution.objects.filter(api_key=other).count() == 3


def _race(gateway, key: str, count: int) -> list[int]:
    async def one(http: httpx.AsyncClient) -> int:
        response = await http.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": ASK,
                                                              "max_tokens": 20})
        return response.status_code

    async def calls() -> list[int]:
        async with httpx.AsyncClient(base_url=gateway.v1, timeout=60, headers={"Authorization": f"Bearer {key}"},
                                     limits=httpx.Limits(max_connections=count)) as http:
            return await asyncio.gather(*(one(http) for _ in range(count)))

    return asyncio.run(calls())


def test_item_46_64_racing_calls_against_an_rpm_of_10_get_10_answers_and_54_429s(gateway, openai_stub, alice):
    openai_stub.always(content="84.", usage=USAGE)
    key = ApiTokenFactory(user=alice, name="racing", scopes=["gateway"])
    key_limits_set(api_key=key, rpm=10)
    inside_one_minute(at_least_s=30)  # one counting window: a new minute midway would let 10 more in

    statuses = _race(gateway, key.key, 64)

    assert (statuses.count(200), statuses.count(429)) == (10, 54), statuses
    assert WorkflowExecution.objects.filter(api_key=key, status="completed").count() == 10
    assert LLMCall.objects.filter(execution__api_key=key).count() == 10 == len(openai_stub.requests)


def test_item_46_racing_calls_never_pass_a_nearly_spent_budget_by_more_than_one_call(gateway, openai_stub, alice):
    openai_stub.always(content="84.", usage=USAGE)
    budget = BudgetFactory(owner=alice, period="month", limit_tokens=200, mode="hard")

    statuses = _race(gateway, gateway.key, 16)

    spent = BudgetPeriod.objects.get(budget=budget).spent_tokens
    answered = statuses.count(200)
    assert answered >= 1 and statuses.count(429) == 16 - answered, statuses
    assert spent == 30 * answered == LLMCall.objects.count() * 30
    assert spent <= 200 + 30  # never past the budget by more than one call's tokens


@pytest.fixture
def in_process(alice, openai_server, settings):
    """Django's test client with alice's gateway key against this process, its `openai` upstream the stub."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['gateway']).key}")
    return api


def test_item_46_an_upstream_that_does_not_answer_in_time_is_a_504_and_a_failed_run(in_process, openai_server,
                                                                                    settings):
    settings.CHATTER_PROVIDER_TIMEOUT_S = 0.5  # (only here: a loaded machine's stub may take that long to answer)
    openai_server.reply(content="late", usage=USAGE, delay_s=2)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    error = response.json()["error"]
    assert response.status_code == 504 and error["code"] == "provider_timeout"
    run = WorkflowExecution.objects.get()
    assert (run.status, run.error_type, run.llm_calls, run.total_tokens) == ("failed", "provider_timeout", 0, 0)
    assert error["message"].endswith(f"Request id: {run.pk}.")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_item_46_a_whole_call_holds_no_pooled_connection_while_its_upstream_answers(in_process, openai_server,
                                                                                     monkeypatch):
    """The request's thread gives back the connection its checks and planning borrowed before it waits on the
    upstream: held, a process answered at most its pool's size of calls at once (20 by default; the rest waited,
    then were refused as busy), however little work the database had."""
    from gateway import passthrough

    post, held = passthrough.upstream_post_whole, []

    def watched(*args, **kwargs):
        held.append(connection.connection is not None)
        return post(*args, **kwargs)

    monkeypatch.setattr(passthrough, "upstream_post_whole", watched)
    openai_server.reply(content="84", usage=USAGE)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    assert response.status_code == 200 and held == [False]
    assert_recorded(response["X-Chatter-Execution"])


def test_item_46_a_refused_upstream_is_a_502_naming_its_url_and_the_reason(in_process, settings):
    """The pass-through's client (aiohttp) says what failed as the run path's does (engine.providers)."""
    port = refusing_port()  # nothing listens there
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{port}/v1"

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    assert response.status_code == 502 and response.json()["error"]["code"] == "provider_error"
    run = WorkflowExecution.objects.get()
    assert (run.status, run.error_type, run.llm_calls) == ("failed", "provider_error", 0)
    assert run.error_message.startswith(
        f"openai call to http://127.0.0.1:{port}/v1/chat/completions failed: connection refused")


def test_item_46_a_stream_through_a_client_without_a_server_loop_is_relayed_and_accounted(in_process, openai_server):
    """Django's test client serves the call with no event loop of a server's: the upstream is read on the gateway's
    own loop (gateway.upstream) and relayed to the loop that reads the answer."""
    openai_server.reply(content="Eighty four.", usage=USAGE)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK, "stream": True,
                                                        "stream_options": {"include_usage": True}}, format="json")

    with pytest.warns(Warning, match="consume asynchronous iterators"):  # (Django's, to read it synchronously)
        body = b"".join(response).decode()
    frames = [line[6:] for line in body.split("\n") if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Eighty four."
    execution = assert_recorded(response.headers["X-Chatter-Execution"])
    assert chunks[-1]["usage"]["total_tokens"] == USAGE["total_tokens"] == execution.total_tokens


def _completion(**fields) -> dict:
    """An upstream's whole answer: a chat completion of "84." with USAGE, its `fields` in place of its own."""
    return {"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "84."}, "finish_reason": "stop"}],
            "usage": USAGE, **fields}


@pytest.mark.parametrize("answer, said", [
    ({"error": {"message": "the model is overloaded", "type": "server_error"}}, "the model is overloaded"),
    (_completion(choices=None), "no choices"),
    (_completion(choices=["84."]), "no choices"),
    (_completion(choices=[{"index": 0, "message": "84."}]), "has no message"),
    (_completion(choices=[{"index": 0, "message": {"role": "assistant", "content": {"text": "84."}}}]),
     "content is not a text"),
    (_completion(choices=[{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": "oops"}}]),
     "tool calls are not calls of functions"),
    ([_completion()], "not an object"),
])
def test_an_upstreams_200_that_is_not_a_chat_completion_is_a_502_and_a_failed_run_without_a_bill(
        in_process, openai_server, answer, said):
    """An answer the call's records cannot be made of (an error answered 200, choices of another shape) is the
    upstream's failure: a 502 saying what was wrong, the run failed, no LLM call; never a 500 after the call was
    billed, nor an error relayed as a completion."""
    openai_server.reply(body=answer)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    assert response.status_code == 502, response.content
    run = WorkflowExecution.objects.get()
    assert (run.status, run.error_type, run.llm_calls, run.total_tokens) == ("failed", "provider_error", 0, 0)
    assert said in run.error_message
    assert_all(run)


@pytest.mark.parametrize("usage", [
    [USAGE], "30", {"prompt_tokens": -1, "completion_tokens": 9, "total_tokens": 8},
    {"prompt_tokens": 1e20, "completion_tokens": 9, "total_tokens": 1e20}, {"prompt_tokens": 21.5},
    {"prompt_tokens": float("inf"), "completion_tokens": 9}, {"completion_tokens": 9},
    {**USAGE, "prompt_tokens_details": [1]}, {"prompt_tokens": 21, "completion_tokens": None, "total_tokens": 21},
])
def test_a_completion_whose_usage_is_no_count_is_answered_and_its_usage_estimated(in_process, openai_server, usage):
    """A usage that is not a count of tokens (a list, a text, a negative, infinite, fractional or 1e20 count) is
    the upstream's error: the answer goes to the client, its call's usage estimated and flagged as when the upstream
    reports none, never stored as said (a 1e20 count overflowed its column: a 500 after the answer was billed)."""
    openai_server.reply(body=_completion(usage=usage, model=5, id=["x"]))

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "84." and body["model"] == "gpt-4o-mini"
    execution = assert_recorded(response["X-Chatter-Execution"], estimated=True)
    assert execution.prompt_tokens == estimate_openai_prompt_tokens(ASK) and 0 < execution.completion_tokens < 9
    assert body["usage"]["total_tokens"] == execution.total_tokens
    assert LLMCall.objects.get().model == "gpt-4o-mini"  # (the model it answered as, 5, is not a name)


@pytest.mark.parametrize("retry_after, waited", [("inf", None), ("nan", None), ("-3", None), ("1e308", 86400),
                                                 ("7", 7)])
def test_a_rate_limited_upstreams_retry_after_is_read_as_a_number_of_seconds_within_a_day(
        in_process, openai_server, retry_after, waited):
    """An upstream's 429 is the client's 429 whatever its Retry-After says: one that is no number of seconds is not
    passed on (an infinite one could not be written in the run's row, a 1e308 one could not be made milliseconds:
    each was a 502 or a 500); one past a day is a day."""
    openai_server.reply(status=429, headers={"Retry-After": retry_after})

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    assert response.status_code == 429, response.content
    assert response.headers.get("Retry-After") == (str(waited) if waited is not None else None)
    run = WorkflowExecution.objects.get()
    assert (run.status, run.error_type) == ("failed", "provider_rate_limited")


def test_a_stream_cut_before_anything_was_read_still_accounts_the_prompt_the_upstream_took(
        in_process, openai_server):
    """An upstream that answered 200 took the prompt, even when it sent nothing of its stream before it broke: the
    call is failed (answered whole: no word came) and accounted, its prompt estimated."""
    openai_server.reply(content="Eighty four.", usage=USAGE, fault="close", fault_after=0)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK, "stream": True},
                               format="json")

    assert (response.status_code, response.json()["error"]["code"]) == (502, "provider_error")
    execution = assert_recorded(response.headers["X-Chatter-Execution"], estimated=True)
    assert execution.status == "failed" and execution.prompt_tokens == estimate_openai_prompt_tokens(ASK)


def test_a_streams_chunks_of_another_shape_are_relayed_and_what_they_count_read(in_process, openai_server):
    """Chunks that are not chat.completion.chunk objects as the relay reads them (a list, choices that are not
    objects, a text that is not a text, a usage that is no count) go to the client as they came; the call is
    accounted by what it could read, never failed by the relay itself."""
    good = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    chunks = [[1, 2], {**good, "choices": ["x", {"index": 0, "delta": "84"}]},
              {**good, "choices": [{"index": 0, "delta": {"content": 84}}], "model": 5},
              {**good, "choices": [{"index": 0, "delta": {"content": "84.", "tool_calls": ["x", {"function": 3}]},
                                    "finish_reason": 1}]},
              {**good, "choices": [], "usage": {"prompt_tokens": float("inf")}}]
    openai_server.reply(body=chunks)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK, "stream": True},
                               format="json")

    with pytest.warns(Warning, match="consume asynchronous iterators"):
        frames = [line[6:] for line in b"".join(response).decode().split("\n") if line.startswith("data: ")]
    assert frames[0] == "[1, 2]" and frames[-1] == "[DONE]", frames
    execution = assert_recorded(response.headers["X-Chatter-Execution"], estimated=True)
    assert execution.status == "completed" and execution.output_data["content"] == "84."


def _upstream_status(url: str, answers) -> None:
    async def status():
        async with upstream_session(url).get(url) as response:
            return response.status, threading.current_thread().name

    answers.put(upstream_call(status()))


def test_item_46_a_forked_process_calls_its_upstreams_on_a_loop_of_its_own(openai_stub):
    """A process forked after its parent's first pass-through call (django-q2 forks its workers) starts a loop and
    sessions of its own: the parent's thread is not in the child."""
    url = f"{openai_stub.base_url}/models"
    fork = multiprocessing.get_context("fork")
    answers = fork.Queue()
    _upstream_status(url, answers)
    child = fork.Process(target=_upstream_status, args=(url, answers))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert answers.get(timeout=5) == answers.get(timeout=5) == (200, "gateway-upstream")


def test_item_46_a_change_made_by_another_process_holds_at_the_servers_next_call(gateway, openai_stub, alice):
    """Limits, prices and revocation changed here, in the test's process (as an operator's shell or another server
    process would): the server's next call holds to them, with no wait for a memo to age."""
    openai_stub.always(content="84.", usage=USAGE)
    key = ApiTokenFactory(user=alice, name="app", scopes=["gateway"])
    key_limits_set(api_key=key, rpm=100)
    inside_one_minute(at_least_s=30)  # the calls counted below fall in one minute: a new one would count anew
    call = openai.OpenAI(base_url=gateway.v1, api_key=key.key, max_retries=0, timeout=30).chat.completions
    first = call.with_raw_response.create(model="gpt-4o-mini", messages=ASK)  # the server reads key, limits, price

    key_limits_set(api_key=key, rpm=100, allowed_models=["gpt-4o"])
    with pytest.raises(openai.PermissionDeniedError):
        call.create(model="gpt-4o-mini", messages=ASK)
    key_limits_set(api_key=key, rpm=2)  # one call counted this minute: one more
    ModelPriceFactory(provider="openai", model_pattern="gpt-4o-mini", input_per_million=Decimal("1000"),
                      output_per_million=Decimal("1000"))
    dearer = call.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.RateLimitError):
        call.create(model="gpt-4o-mini", messages=ASK)
    key_limits_remove(api_key=key)
    call.create(model="gpt-4o-mini", messages=ASK)
    api_key_revoke(token=key, actor=alice)
    with pytest.raises(openai.AuthenticationError):
        call.create(model="gpt-4o-mini", messages=ASK)

    assert Decimal(dearer.headers["x-chatter-cost"]) == Decimal("0.03") > Decimal(first.headers["x-chatter-cost"])


def _transactions(statements: list[str]) -> int:
    """The transactions among `statements` (the test's own transaction makes each a savepoint: the outermost)."""
    depth = count = 0
    for sql in statements:
        if sql.startswith("SAVEPOINT"):
            count += depth == 0
            depth += 1
        elif sql.startswith(("RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
            depth -= sql.startswith("RELEASE")
    return count


def test_item_46_a_whole_call_is_one_write_after_the_upstream(in_process, openai_server):
    """A pass-through call answered whole (no hard budget over it): the key, its limits and the price from the
    process's memo; nothing written before the upstream answers (a crash
    mid-call leaves nothing, and answered nothing), then its run, start, LLM call, end, audit and rollups in one
    transaction, not counted by the limit of runs at once (never seen in progress). On PostgreSQL that is one
    statement, atomic by itself: no transaction around it (here, no savepoint in the test's)."""
    openai_server.always(content="84.", usage=USAGE)
    ask = {"model": "gpt-4o-mini", "messages": ASK}
    assert in_process.post("/v1/chat/completions", ask, format="json").status_code == 200  # memo filled
    asked, before = len(openai_server.requests), []

    def noted(execute, sql, params, many, context):  # the statements run before the upstream is asked
        if len(openai_server.requests) == asked:
            before.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(noted), CaptureQueriesContext(connection) as queries:
        response = in_process.post("/v1/chat/completions", ask, format="json")

    assert response.status_code == 200
    assert all(sql.startswith("SELECT") for sql in before), before
    statements = [query["sql"] for query in queries.captured_queries]
    reads = [sql for sql in statements if sql.startswith("SELECT") and ("apitoken" in sql or "keylimits" in sql
                                                                       or "modelprice" in sql)]
    written = [sql for sql in statements if not sql.startswith(("SELECT", "SAVEPOINT", "RELEASE SAVEPOINT"))]
    if connection.vendor == "postgresql":
        assert _transactions(statements) == 0 and len(written) == 1, statements
        assert [table for table in ("workflowexecution", "nodeexecution", "llmcall", "executionevent",
                                    "pendingauditevent", "usagerollup") if f'_{table}"' not in written[0]] == []
    else:
        assert _transactions(statements) == 1, statements
    assert not any("max_concurrent_runs" in sql or "COUNT(*)" in sql for sql in statements), statements
    assert reads == [], reads  # (the memo's version: in the shared cache, or one statement in the database)
    runs_inserted = [sql for sql in written if 'INSERT INTO "workflows_workflowexecution"' in sql]
    assert len(runs_inserted) == 1, written  # inserted as it ended: never updated
    assert not any('UPDATE "workflows_workflowexecution"' in sql for sql in written), written
    assert_recorded(response.headers["x-chatter-execution"])


def test_item_46_a_whole_calls_events_cross_processes_on_its_owners_topic_only(in_process, openai_server, monkeypatch,
                                                                            django_capture_on_commit_callbacks):
    """A call written whole inserts its run's row with its events: no other process can be watching its topic
    (a watcher is let in by that row), so its events go through the channel layer on its owner's topic only
    (workflows.hub.Hub.publish); a streamed call's run is written before it answers, watchable as any run."""
    from workflows import events

    handed = []
    monkeypatch.setattr(events.hub, "publish", lambda envelopes, **kwargs: handed.append(
        (envelopes[0]["execution_id"], [e["event"] for e in envelopes], kwargs["watchable"])))
    openai_server.always(content="84.", usage=USAGE)

    with django_capture_on_commit_callbacks(execute=True):
        whole = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")
        streamed = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK,
                                                            "stream": True}, format="json")
        with pytest.warns(Warning, match="consume asynchronous iterators"):  # (Django's, to read it synchronously)
            assert b"".join(streamed).endswith(b"data: [DONE]\n\n")

    whole_id, streamed_id = whole.headers["x-chatter-execution"], streamed.headers["x-chatter-execution"]
    assert [(run, names[-1], watchable) for run, names, watchable in handed if run == whole_id] == [
        (whole_id, "workflow_completed", False)]  # one hand-off: its start to its end
    assert {watchable for run, _, watchable in handed if run == streamed_id} == {True}
    assert handed[-1][1][-1] == "workflow_completed"


def test_item_46_a_whole_call_whose_one_write_fails_is_written_in_two(in_process, openai_server, monkeypatch):
    """Should the one write of a whole call fail (here its end, refused before it writes anything), nothing of it
    is written and the call is written as any other (its run, then its end): answered, and recorded exactly."""
    import gateway.passthrough
    from django.db import OperationalError

    def refused(**kwargs):
        raise OperationalError("the database went away mid-write")

    monkeypatch.setattr(gateway.passthrough, "execution_finish", refused)
    openai_server.always(content="84.", usage=USAGE)

    with CaptureQueriesContext(connection) as queries:
        response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "84."
    assert _transactions([query["sql"] for query in queries.captured_queries]) == 2  # its run, then its end
    assert assert_recorded(response.headers["x-chatter-execution"]).status == "completed"


def test_item_46_a_stream_is_written_with_its_call_in_flight_before_the_upstream_answers(gateway, openai_stub):
    """A streamed call's answer leaves before its end is written: its run, its start and its model call marked in
    flight are written in one transaction before the upstream is asked (what a crash mid-stream leaves for the
    recovery sweep to account for), its call and end in one more."""
    openai_stub.reply(content="one two three", usage=USAGE, chunk_delay_s=0.2)

    with httpx.stream("POST", f"{gateway.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "gpt-4o-mini", "messages": ASK, "stream": True}) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # the upstream is answering
        execution_id = response.headers["x-chatter-execution"]
        run = WorkflowExecution.objects.get(pk=execution_id)
        model = NodeExecution.objects.get(execution=run, node_id="model")
        assert (run.status, model.status) == ("running", "running")
        assert model.output["call_in_flight"]["prompt_tokens"] > 0
        list(lines)

    assert assert_recorded(execution_id).status == "completed"


def test_item_46_a_call_reads_the_hot_reads_version_once(alice, openai_server, settings, tmp_path, monkeypatch):
    """Where the memo is kept (a shared cache), a call asks the cache for its version once (the request's first hot
    read: the key), not at each read (its limits, the price, its limits again at its end); another process's change
    still holds from the next call on (its key revoked there: a 401)."""
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                       "LOCATION": str(tmp_path / "cache")}}
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    token = ApiTokenFactory(user=alice, scopes=["gateway"])
    key_limits_set(api_key=token, rpm=1000)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    openai_server.always(content="84.", usage=USAGE)
    ask = {"model": "gpt-4o-mini", "messages": ASK}
    hot_reads.renew()
    assert api.post("/v1/chat/completions", ask, format="json").status_code == 200  # the memo filled
    asked = []
    version = hot_reads.version
    monkeypatch.setattr(hot_reads, "version", lambda: (asked.append(1), version())[1])

    response = api.post("/v1/chat/completions", ask, format="json")

    assert response.status_code == 200 and response.headers["x-ratelimit-limit-requests"] == "1000"
    assert len(asked) == 1, asked  # the shared cache asked once
    with connection.cursor() as cursor:  # another process revokes the key (this process's memo still has it) ...
        cursor.execute("UPDATE chatter_project_apitoken SET revoked_at = %s WHERE id = %s", [timezone.now(), token.pk])
    hot_reads.announce()  # ... and announces it after its commit
    assert api.post("/v1/chat/completions", ask, format="json").status_code == 401


def test_fl1_item_02_knowing_which_providers_are_usable_imports_no_providers_sdk():
    """Every gateway call asks which providers are usable; Anthropic's is usable when its package is installed, which
    is asked without importing it: its SDK took tens of seconds to import under load, on a process's first call (an
    OpenAI pass-through whose client timed out waiting for its headers). A fresh interpreter: this one has it."""
    check = ("import sys\n"
             "from engine.providers import providers_configured\n"
             "from engine.settings import settings_update\n"
             "settings_update(anthropic_api_key='sk-ant-not-a-real-key')\n"
             "print(providers_configured(), sorted({'anthropic', 'langchain_anthropic'} & set(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    usable, imported = out.stdout.strip().rsplit("] ", 1)
    assert "'anthropic'" in usable and imported == "[]", out.stdout


_UPSTREAM = """
import json, sys, threading
from tests.openai_stub import OpenAIStub
stub = OpenAIStub(keep_alive=True).start()
stub.always(content=" ".join(f"word{i}" for i in range(100)), usage=json.loads(sys.argv[1]), chunk_delay_s=0.1)
print(stub.base_url, flush=True)
threading.Event().wait()
"""


@pytest.fixture
def upstream_process():
    """The OpenAI stub as a process of its own (each reply 100 words, 0.1 s apart), to be killed mid-stream."""
    process = subprocess.Popen([sys.executable, "-c", _UPSTREAM, json.dumps(USAGE)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        yield process, process.stdout.readline().strip()  # its base URL, once it listens
    finally:
        process.kill()
        process.wait(timeout=10)


def test_item_46_an_upstream_process_killed_mid_stream_ends_the_stream_with_an_error_and_an_accounted_call(
        shared_daphne_server, upstream_process, alice):
    process, base_url = upstream_process
    assert base_url.startswith("http://127.0.0.1:")
    server = shared_daphne_server(OPENAI_BASE_URL=base_url, OPENAI_API_KEY="sk-upstream-not-a-real-key",
                                  CHATTER_PROVIDER_MAX_RETRIES="0")
    key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key

    frames = []
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o-mini", "messages": ASK, "stream": True}) as response:
        execution_id = response.headers["x-chatter-execution"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                frames.append(line[6:])
                if len(frames) == 3:  # the answer under way: its upstream dies (once, not again at the blank line)
                    process.kill()

    assert response.status_code == 200 and "[DONE]" not in frames
    error = json.loads(frames[-1])["error"]
    assert error["type"] == "api_error" and execution_id in error["message"] and base_url not in error["message"]
    streamed = "".join(json.loads(f)["choices"][0]["delta"].get("content") or "" for f in frames[:-1])
    assert streamed.startswith("word0 word1") and len(streamed.split()) < 100
    execution = assert_recorded(execution_id, estimated=True)  # what it produced, estimated: no usage came
    assert (execution.status, execution.error_type) == ("failed", "provider_error")
    assert execution.output_data["content"] == streamed and execution.completion_tokens > 0


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers a chat completion itself, noting the request line and its credentials."""

    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        type(self).seen.append((self.requestline, self.headers.get("Proxy-Authorization"),
                                json.loads(self.rfile.read(length))["model"]))
        body = json.dumps({"id": "chatcmpl-proxied", "object": "chat.completion", "model": "gpt-4o-mini",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": "via proxy"},
                                        "finish_reason": "stop"}], "usage": USAGE}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - (the provider's model list, asked in the background)
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_item_46_the_pass_through_goes_through_the_proxy_the_environment_names(in_process, settings, monkeypatch):
    """HTTP_PROXY (with its credentials) and NO_PROXY as the openai SDK's client honours them, read once per
    upstream (gateway.upstream): the call reaches its upstream through the proxy, a host NO_PROXY names directly."""
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    _Proxy.seen = []
    monkeypatch.setenv("HTTP_PROXY", f"http://gw%40user:s%3Acret@127.0.0.1:{proxy.server_port}")
    monkeypatch.setenv("NO_PROXY", "exempt.invalid")
    settings.OPENAI_BASE_URL = "http://proxied-upstream.invalid/v1"  # (a name no resolver knows: only the proxy)
    try:
        response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")
    finally:
        proxy.shutdown()
        proxy.server_close()

    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "via proxy"
    credentials = "Basic " + base64.b64encode(b"gw@user:s:cret").decode()
    assert _Proxy.seen == [("POST http://proxied-upstream.invalid/v1/chat/completions HTTP/1.1", credentials,
                            "gpt-4o-mini")]
    assert_recorded(response.headers["x-chatter-execution"])

    settings.OPENAI_BASE_URL = "http://exempt.invalid/v1"  # NO_PROXY: asked directly, which cannot resolve it
    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")
    assert response.status_code == 502 and len(_Proxy.seen) == 1
    assert "exempt.invalid" in WorkflowExecution.objects.latest("created_at").error_message
