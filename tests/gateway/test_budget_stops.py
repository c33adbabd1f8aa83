"""A hard budget over gateway calls, on the run path and the pass-through alike: a call's reservation prices every
choice it asks for (`n`); a call stopped by its budget is recorded with all the upstream reported and answered as
OpenAI's clients do not retry (429 `insufficient_quota`), whole or streamed (docs/operations/budgets.md); a run's own
limit and its cancellation are answered 400 and 409, not retried either (docs/api/gateway.md#errors)."""
import concurrent.futures
import json
import re
import time

import httpx
import openai
import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from budgets.models import BudgetPeriod
from budgets.services import EPOCH
from tests.factories import ApiTokenFactory, BudgetFactory, ConversationFactory
from tests.gateway.conftest import client
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

LONG = " ".join(f"word{i}" for i in range(400))  # an upstream that ignores max_tokens: 800 tokens reported
LONG_USAGE = {"prompt_tokens": 11, "completion_tokens": 800, "total_tokens": 811}
ASK = [{"role": "user", "content": "Count."}]
USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}


def test_n_choices_are_each_reserved_for_and_a_budget_without_room_for_them_refuses_the_call(gateway_api, alice):
    BudgetFactory(owner=alice, period="total", limit_tokens=200, mode="hard")

    refused = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": ASK, "n": 128,
                                                        "max_tokens": 20}, format="json")
    answered = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": ASK, "n": 3,
                                                         "max_tokens": 20}, format="json")

    error = refused.json()["error"]
    assert refused.status_code == 429 and (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert answered.status_code == 200, answered.json()
    run = WorkflowExecution.objects.get()  # the refused call left no run
    assert len(answered.json()["choices"]) == 3 and run.budget_holds[0]["tokens"] >= 3 * 20


def test_the_pass_through_reserves_for_n_choices_too(gateway, openai_stub, alice):
    BudgetFactory(owner=alice, period="total", limit_tokens=200, mode="hard")

    with pytest.raises(openai.RateLimitError) as refused:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, n=128, max_tokens=20)

    assert refused.value.code == "budget_exceeded" and not openai_stub.requests
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("model, stream", [("gpt-4o-mini", False), ("gpt-4o-mini", True), ("local-echo-1", False),
                                           ("local-echo-1", True)],
                         ids=["pass-through", "pass-through streamed", "run path", "run path streamed"])
def test_a_call_a_spent_budget_refuses_at_its_start_is_sent_once_not_retried(gateway, openai_stub, alice, model,
                                                                              stream):
    budget = BudgetFactory(owner=alice, period="total", limit_tokens=1000, mode="hard")
    BudgetPeriod.objects.create(budget=budget, starts_at=EPOCH, spent_tokens=1000)
    sent = []  # every request OpenAI's client makes, as users have it (it retries a 429 twice unless told not to)
    api = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, timeout=30,
                        http_client=httpx.Client(event_hooks={"request": [sent.append]}))

    with pytest.raises(openai.RateLimitError) as refused:
        api.chat.completions.create(model=model, messages=ASK, stream=stream)

    assert len(sent) == 1 and AuditEvent.objects.filter(action="limit.exceeded").count() == 1
    assert (refused.value.code, refused.value.type) == ("budget_exceeded", "insufficient_quota")
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert not WorkflowExecution.objects.exists() and not openai_stub.requests


def _assert_stopped_and_billed(execution_id, budget, *, tokens: int | None,
                               estimated: bool = False) -> WorkflowExecution:
    """The run failed `budget_exceeded` with its one call recorded (`tokens`; None: any), its budget charged exactly
    that."""
    run = WorkflowExecution.objects.get(pk=execution_id)
    tokens = run.total_tokens if tokens is None else tokens
    assert (run.status, run.error_type, run.llm_calls, run.total_tokens) == ("failed", "budget_exceeded", 1, tokens)
    (call,) = LLMCall.objects.filter(execution=run)
    assert (call.total_tokens, call.cost, call.estimated) == (tokens, run.cost, estimated) and call.cost > 0
    period = BudgetPeriod.objects.get(budget=budget)
    assert (period.spent_tokens, period.reserved_tokens, period.spent_usd) == (tokens, 0, run.cost)
    assert_all(run)
    return run


def test_a_whole_reply_past_its_budget_is_recorded_with_its_usage_and_not_retried(gateway, openai_stub, alice):
    budget = BudgetFactory(owner=alice, period="total", limit_tokens=200, mode="hard")
    conversation = ConversationFactory(owner=alice)
    openai_stub.always(content=LONG, usage=LONG_USAGE)

    with pytest.raises(openai.RateLimitError) as stopped:  # (OpenAI's client as users have it: it retries)
        openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, timeout=30, max_retries=2).chat.completions.create(
            model="gpt-4o-mini", messages=ASK, max_tokens=5,
            extra_headers={"X-Chatter-Conversation": str(conversation.pk)})

    error = stopped.value
    assert (error.code, error.type) == ("budget_exceeded", "insufficient_quota")
    assert re.search(r"[.!?] Request id: \S+\.$", error.message), error.message  # two sentences
    assert len(openai_stub.requests) == 1  # not retried
    _assert_stopped_and_billed(error.response.headers["x-request-id"], budget, tokens=811)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_pass_through_stops_a_reply_past_its_budget_as_the_run_path_does(gateway, openai_stub, alice, stream):
    budget = BudgetFactory(owner=alice, period="total", limit_tokens=200, mode="hard")
    openai_stub.reply(content=LONG, usage=LONG_USAGE)
    sent = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 5, "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {})}

    with httpx.stream("POST", f"{gateway.v1}/chat/completions", json=sent, timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"}) as response:
        body = response.read().decode()
        execution_id = response.headers["x-request-id"]

    if stream:  # stopped at a token boundary once its text passed twice max_tokens + 32 (4 characters a token)
        frames = [line[6:] for line in body.split("\n") if line.startswith("data: ")]
        error = json.loads(frames[-1])["error"]
        streamed = "".join(json.loads(frame)["choices"][0]["delta"].get("content") or "" for frame in frames[:-1])
        assert "[DONE]" not in frames and LONG.startswith(streamed) and 4 * (2 * 5 + 32) < len(streamed) < 200
        run = _assert_stopped_and_billed(execution_id, budget, tokens=None, estimated=True)
        assert run.output_data["content"] == streamed and run.completion_tokens > 0
    else:  # answered whole: recorded with the usage the upstream reported
        assert response.status_code == 429
        error = json.loads(body)["error"]
        _assert_stopped_and_billed(execution_id, budget, tokens=811)
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")


@pytest.fixture
def in_process(alice, openai_server, settings):
    """Django's test client with alice's gateway key against this process, its `openai` upstream the stub."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['gateway']).key}")
    return api


def test_a_run_past_its_own_limit_is_a_400_not_retried(in_process, openai_server, alice, settings):
    settings.CHATTER_EXECUTION_TIMEOUT_S = 1  # the run's own limit bounds its call: the upstream answers in 3 s
    openai_server.reply(content="late", usage=USAGE, delay_s=3)

    response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json",
                               HTTP_X_CHATTER_CONVERSATION=str(ConversationFactory(owner=alice).pk))

    assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "limit_exceeded"
    run = WorkflowExecution.objects.get(pk=response.headers["x-request-id"])
    assert (run.status, run.error_type) == ("failed", "limit_exceeded")


def test_a_whole_call_whose_run_is_cancelled_is_a_409_not_retried(gateway, openai_stub, alice):
    openai_stub.reply(content="84.", usage=USAGE, hold=True)  # answered once the run's cancel is asked
    owner = httpx.Client(base_url=gateway.base_url, timeout=30,
                         headers={"Authorization": f"Bearer {ApiTokenFactory(user=alice, name='runs').key}"})
    conversation = ConversationFactory(owner=alice)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answered = pool.submit(lambda: openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, timeout=30).with_options(
            max_retries=2).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=ASK, extra_headers={"X-Chatter-Conversation": str(conversation.pk)}))
        while not openai_stub.requests:  # the call is waiting on its upstream
            time.sleep(0.05)
        (run,) = WorkflowExecution.objects.all()
        assert owner.post(f"/api/v1/executions/{run.pk}/cancel/").status_code == 200
        openai_stub.release()
        with pytest.raises(openai.ConflictError) as cancelled:
            answered.result()

    assert cancelled.value.code == "cancelled" and len(openai_stub.requests) == 1  # not retried
    run.refresh_from_db()
    assert (run.status, run.error_type, run.llm_calls, run.total_tokens) == ("cancelled", "cancelled", 1, 30)
    assert_all(run)
