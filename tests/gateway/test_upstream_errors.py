"""The gateway's errors as OpenAI's clients expect them (issue 43, items 17 to 20), through OpenAI's own Python client
with its retries on: a request an upstream refuses keeps its status and is raised at once; a rate limited upstream,
or a model whose deployments all cool down, is a 429 whose Retry-After the client waits out; only an upstream that
fails is a 502 (504 when it timed out), after every deployment and fallback; a caller is told the model and the
request id, the operator's log the rest; `n`, the model that answered, `system_fingerprint` and the types of
parameters as OpenAI has them."""
import logging

import openai
import pytest
from rest_framework.test import APIClient

from tests.factories import ApiTokenFactory, ConversationFactory
from tests.fixtures_server import refusing_port
from tests.gateway.conftest import client
from tests.invariants import assert_all
from tests.gateway.test_routing import (  # noqa: F401 - fixtures
    ASK,
    USAGE,
    _deployments_of_module,
    _upstreams_of_module,
    assert_exact,
    attempts_of,
    deployment,
    names,
    routed,
    routed_own,
    routes,
    upstreams,
)
from tests.gateway.test_routing import client as routed_client
from workflows.models import LLMCall, WorkflowExecution

TOO_LONG = {"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted "
                                 "in 9001 tokens. Please reduce the length of the messages.",
                      "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}


def retrying(server, **kwargs) -> openai.OpenAI:
    """OpenAI's client as users have it: it retries 408, 409, 429 and 5xx (twice by default), honouring
    Retry-After."""
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.key, timeout=30, **kwargs)


def no_url(text: str, *stubs) -> bool:
    return "http://" not in text and "127.0.0.1" not in text and all(str(s.port) not in text for s in stubs)


# --- 17: an upstream's client error keeps its status; 429 with its Retry-After; failures 502/504 ----------------
def test_item_17_an_upstream_client_error_keeps_its_status_and_is_raised_at_once(gateway, openai_stub):
    openai_stub.always(status=400, error_body=TOO_LONG)

    with pytest.raises(openai.BadRequestError) as refused:
        retrying(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    error = refused.value
    assert (error.status_code, error.code, error.param, error.type) == (
        400, "context_length_exceeded", "messages", "invalid_request_error")
    assert error.body["message"] == TOO_LONG["error"]["message"]  # the upstream's own words
    # Not retried: one call, one run, one upstream request.
    assert len(openai_stub.requests) == 1
    run = WorkflowExecution.objects.get()
    assert str(run.pk) == error.response.headers["x-request-id"]
    assert (run.status, run.error_type, run.total_tokens, run.cost) == ("failed", "provider_error", 0, 0)
    assert_exact()


def test_item_17_an_upstream_429_is_a_429_with_its_retry_after_which_the_client_waits_out(gateway, openai_stub):
    openai_stub.reply(status=429, headers={"retry-after": "7"})

    with pytest.raises(openai.RateLimitError) as limited:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    openai_stub.reply(status=429, headers={"retry-after-ms": "300"})
    openai_stub.reply(content="84.", usage=USAGE)
    reply = retrying(gateway, max_retries=1).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    assert limited.value.status_code == 429 and limited.value.response.headers["retry-after"] == "7"
    assert no_url(limited.value.message, openai_stub)
    assert reply.choices[0].message.content == "84." and len(openai_stub.requests) == 3
    runs = list(WorkflowExecution.objects.order_by("created_at"))
    assert [(run.status, run.error_type) for run in runs] == [
        ("failed", "provider_rate_limited"), ("failed", "provider_rate_limited"), ("completed", "")]
    assert LLMCall.objects.get().execution == runs[2]
    assert_exact()


@routes(lambda refusing, healthy, n: {
    n.four_o: {"deployments": [deployment(n.a, refusing, "ROUTE_KEY_A", weight=1_000_000),
                               deployment(n.b, healthy, "ROUTE_KEY_B")],
               "fallbacks": [n.mini]},
    n.mini: {"deployments": [deployment(f"{n.b}-mini", healthy, "ROUTE_KEY_B")]}})
def test_item_17_a_client_error_of_a_deployment_is_not_tried_on_the_others(routed, upstreams):
    refusing, healthy = upstreams
    refusing.always(status=400, error_body={"error": {"message": "Invalid value for 'temperature'.",
                                                      "type": "invalid_request_error", "param": "temperature",
                                                      "code": "invalid_value"}})
    healthy.always(content="84.", usage=USAGE)
    a, four_o = routed.names.a, routed.names.four_o

    with pytest.raises(openai.BadRequestError) as refused:
        retrying(routed).chat.completions.create(model=four_o, messages=ASK)
    with pytest.raises(openai.BadRequestError):  # the deployment did not cool down: a request's fault is not its
        retrying(routed).chat.completions.create(model=four_o, messages=ASK)

    assert (refused.value.code, refused.value.param) == ("invalid_value", "temperature")
    assert len(refusing.requests) == 2 and not healthy.requests  # no other deployment, no fallback
    runs = list(WorkflowExecution.objects.order_by("created_at"))
    assert [attempts_of(run) for run in runs] == [[(f"{four_o}/{a}", four_o, False, None, "provider_error")]] * 2
    assert_exact()


def test_item_17_a_routed_stream_that_fails_before_its_first_word_is_answered_with_the_status(routed_own,
                                                                                              upstreams):
    """A routed model's stream is a run (no pass-through): its answer waits for the reply's first word, so a
    refusal or a rate limit before it keeps its status, which OpenAI's clients read (and retry, for a 429), where
    a 200 with an error event would be a bare APIError."""
    limited, _ = upstreams
    four_o, (a, _) = "gpt-4o-mini", names()
    routed = routed_own({four_o: {"deployments": [deployment(a, limited, "ROUTE_KEY_A")]}}, cooldown_s=1)
    limited.reply(status=400, error_body=TOO_LONG)
    limited.reply(status=429, headers={"retry-after": "1"})  # the deployment cools down for 1 s, then answers
    limited.reply(content="84.", usage=USAGE)
    limited.reply(status=429, headers={"retry-after": "7"})

    with pytest.raises(openai.BadRequestError) as refused:
        list(routed_client(routed).chat.completions.create(model=four_o, messages=ASK, stream=True))
    chunks = list(retrying(routed, max_retries=1).chat.completions.create(
        model=four_o, messages=ASK, stream=True, stream_options={"include_usage": True}))
    with pytest.raises(openai.RateLimitError) as limited_answer:
        list(routed_client(routed).responses.create(model=four_o, input="hi", stream=True))

    assert (refused.value.status_code, refused.value.code) == (400, "context_length_exceeded")
    assert refused.value.response.headers["content-type"].startswith("application/json")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "84."
    assert chunks[-1].usage.total_tokens == USAGE["total_tokens"]
    assert limited_answer.value.response.headers["retry-after"] == "7" and len(limited.requests) == 4
    runs = list(WorkflowExecution.objects.order_by("created_at"))
    assert [(run.status, run.error_type) for run in runs] == [
        ("failed", "provider_error"), ("failed", "provider_rate_limited"), ("completed", ""),
        ("failed", "provider_rate_limited")]
    assert refused.value.response.headers["x-request-id"] == str(runs[0].pk)
    assert_exact()


CLOSED = f"http://127.0.0.1:{refusing_port()}/v1"  # nothing listens there: connections are refused


@routes(lambda down, hung, n: {
    n.four_o: {"deployments": [deployment(n.a, down, "ROUTE_KEY_A")], "fallbacks": [n.mini]},
    n.mini: {"deployments": [deployment(n.b, hung, "ROUTE_KEY_B", timeout_s=1)]},
    n.four_one: {"deployments": [{"name": n.a, "base_url": CLOSED, "api_key_env": "ROUTE_KEY_A"}],
                 "fallbacks": [n.four_o]},
})
def test_item_17_only_upstream_failures_are_502_or_504_after_every_deployment_and_fallback(routed, upstreams):
    down, hung = upstreams
    down.always(status=503)
    hung.always(delay_s=3, content="too late", usage=USAGE)
    a, b, mini, four_o, four_one = (routed.names.a, routed.names.b, routed.names.mini, routed.names.four_o,
                                    routed.names.four_one)
    api = routed_client(routed)

    with pytest.raises(openai.APIStatusError) as timed_out:
        api.chat.completions.create(model=four_o, messages=ASK)
    with pytest.raises(openai.APIStatusError) as failed:
        api.chat.completions.create(model=four_one, messages=ASK)

    # four_o: its deployment 503, its fallback's timed out (the last failure); four_one: refused, then four_o's
    # deployment (cooling down after its 503) left out
    assert (timed_out.value.status_code, timed_out.value.code) == (504, "provider_timeout")
    assert (failed.value.status_code, failed.value.code) == (502, "provider_error")
    assert failed.value.body["message"].startswith(f"The connection to the upstream of model `{four_one}` failed.")
    for error in (timed_out.value, failed.value):
        assert no_url(error.message, down, hung) and CLOSED not in error.message
        assert error.response.headers["x-request-id"] in error.message
    first, second = WorkflowExecution.objects.order_by("created_at")
    assert [(d, ok, status) for d, _, ok, status, _ in attempts_of(first)] == [
        (f"{four_o}/{a}", False, 503), (f"{mini}/{b}", False, None)]
    assert [(d, ok) for d, _, ok, _, _ in attempts_of(second)] == [(f"{four_one}/{a}", False)]
    assert_exact()


# --- 18: every deployment cooling down: a 429 with the shortest cooldown as Retry-After ---------------------------
def test_item_18_when_every_deployment_cools_down_the_answer_is_429_with_the_shortest_retry_after(routed_own,
                                                                                                    upstreams):
    limited, down = upstreams
    limited.always(status=429, headers={"retry-after": "20"})
    down.always(status=500)
    a, b = names()
    server = routed_own({"gpt-4o-mini": {"deployments": [deployment(a, limited, "ROUTE_KEY_A", weight=1_000_000),
                                                     deployment(b, down, "ROUTE_KEY_B")]}}, cooldown_s=2)
    api = routed_client(server)

    with pytest.raises(openai.RateLimitError) as both_failed:
        api.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.RateLimitError) as cooling:
        api.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    down.always(content="84.", usage=USAGE)  # back up: a client that waits the Retry-After out gets its answer
    reply = retrying(server, max_retries=3).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    # a cooled down for the 20 s its 429 asked, b for the file's 2 s: the shortest is b's
    assert both_failed.value.response.headers["retry-after"] == "2"
    assert cooling.value.code == "provider_unavailable"
    assert 1 <= int(cooling.value.response.headers["retry-after"]) <= 2
    assert 0 < int(cooling.value.response.headers["retry-after-ms"]) <= 2000
    assert "gpt-4o-mini" in cooling.value.message and no_url(cooling.value.message, limited, down)
    assert reply.choices[0].message.content == "84." and len(limited.requests) == 1
    runs = list(WorkflowExecution.objects.order_by("created_at"))
    assert attempts_of(runs[1]) == [] and runs[-1].status == "completed"
    assert [run.status for run in runs[:-1]] == ["failed"] * (len(runs) - 1)
    assert LLMCall.objects.get().execution == runs[-1]
    assert_exact()


# --- 19: a caller sees the model and the request id; the operator's log has the rest ------------------------------
@pytest.fixture
def in_process(alice, openai_server, settings):
    """Django's test client with alice's gateway key against this process, whose `openai` upstream is the stub."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiTokenFactory(user=alice, scopes=['gateway']).key}")
    return api


def test_item_19_a_failed_call_names_the_model_and_request_id_and_the_log_has_the_rest(in_process, openai_server,
                                                                                     caplog):
    openai_server.always(status=500, error_body={"error": {"message": "upstream exploded on gpu-7.internal"}})

    with caplog.at_level(logging.WARNING, logger="gateway.errors"):
        response = in_process.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": ASK}, format="json")

    request_id = response.headers["X-Request-Id"]
    error = response.json()["error"]
    assert response.status_code == 502 and (error["code"], error["type"]) == ("provider_error", "api_error")
    assert error["message"] == f"The upstream of model `gpt-4o-mini` answered HTTP 500. Request id: {request_id}."
    assert no_url(response.content.decode(), openai_server) and "gpu-7" not in response.content.decode()
    (logged,) = [record.getMessage() for record in caplog.records if record.name == "gateway.errors"]
    assert request_id in logged and f"127.0.0.1:{openai_server.port}/v1/chat/completions" in logged
    assert "gpu-7.internal" in logged


def test_item_19_a_stream_and_a_response_that_fail_say_no_more(gateway, openai_stub):
    openai_stub.always(status=500, error_body={"error": {"message": "upstream exploded on gpu-7.internal"}})

    with pytest.raises(openai.APIError) as streamed:
        list(client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True))
    # A streamed response that failed before its first word is a failed answer with the failure's status, as the
    # chat completion's is (the stream's `response.failed` is for a failure after it started: test_responses.py)
    with pytest.raises(openai.InternalServerError) as responded:
        list(client(gateway).responses.create(model="gpt-4o-mini", input="hi", stream=True))

    assert "The upstream of model `gpt-4o-mini` answered HTTP 500. Request id: " in streamed.value.message
    assert responded.value.status_code == 502 and responded.value.body["message"].startswith(
        "The upstream of model `gpt-4o-mini` answered HTTP 500. Request id: ")
    for text in (streamed.value.message, responded.value.message):
        assert no_url(text, openai_stub) and "gpu-7" not in text


OVERLOADED = {"error": {"message": "The model is overloaded, see https://status.example.com/gpu-7",
                        "type": "server_error", "code": "overloaded"}}
WORD = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Eighty"}, "finish_reason": None}]}


def _kept(alice, path: str) -> dict:
    """The headers that send a call on `path`: a conversation keeps it on the run path."""
    return {"X-Chatter-Conversation": str(ConversationFactory(owner=alice).pk)} if path == "run path" else {}


@pytest.mark.parametrize("path", ["pass-through", "run path"])
@pytest.mark.parametrize("answer", ["whole", "to a stream, whole", "as a stream's event"])
def test_an_upstreams_200_that_is_an_error_object_is_a_502_with_its_message(gateway, openai_stub, alice, path,
                                                                              answer):
    """An error object answered 200 (as some OpenAI-compatible servers answer) was told "answered HTTP 502" on the
    pass-through, and on the run path "The connection to the upstream failed": it is a 502 saying the upstream
    answered with an error, with the upstream's own message (its URLs left out), the run failed provider_error."""
    openai_stub.reply(body=[OVERLOADED] if answer == "as a stream's event" else OVERLOADED)

    with pytest.raises(openai.InternalServerError) as failed:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=answer != "whole",
                                                extra_headers=_kept(alice, path))

    run = WorkflowExecution.objects.get()
    assert (failed.value.status_code, failed.value.code) == (502, "provider_error")
    assert failed.value.body["message"] == ("The upstream of model `gpt-4o-mini` answered with an error: The model is "
                                    f"overloaded, see <upstream>. Request id: {run.pk}.")
    assert (run.status, run.error_type) == ("failed", "provider_error")
    assert "answered HTTP 200 with an error: The model is overloaded" in run.error_message
    # Billed as the path's other failures: an answer with no reply has no LLM call; a relayed stream that failed
    # is billed by the estimate of its prompt (docs/api/gateway.md, Errors).
    assert run.llm_calls == (1 if (path, answer) == ("pass-through", "as a stream's event") else 0)
    assert_all(run)


@pytest.mark.parametrize("path", ["pass-through", "run path"])
def test_an_error_object_after_the_first_word_ends_the_stream_with_the_upstreams_message(gateway, openai_stub,
                                                                                          alice, path):
    openai_stub.reply(body=[WORD, OVERLOADED])

    with pytest.raises(openai.APIError) as failed:
        for _ in client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True,
                                                         extra_headers=_kept(alice, path)):
            pass

    run = WorkflowExecution.objects.get()
    assert failed.value.message.startswith("The upstream of model `gpt-4o-mini` answered with an error: The model "
                                           "is overloaded, see <upstream>.")
    assert (run.status, run.error_type, run.llm_calls) == ("failed", "provider_error", 1)
    assert LLMCall.objects.get().estimated
    assert_all(run)


# --- 20: n, the model that answered, system_fingerprint, parameters' types -----------------------------------------
def test_item_20_n_choices_on_the_local_model(gateway):
    one = client(gateway).chat.completions.create(model="local-echo-1", messages=ASK)
    two = client(gateway).chat.completions.create(model="local-echo-1", messages=ASK, n=2)

    assert [choice.index for choice in two.choices] == [0, 1]
    assert {choice.message.content for choice in two.choices} == {one.choices[0].message.content}
    assert two.usage.prompt_tokens == one.usage.prompt_tokens
    assert two.usage.completion_tokens == 2 * one.usage.completion_tokens
    assert_exact()


# Each call asks a model of its own, whose one deployment is down: each fails over for real (on the module's shared
# server, whose cooldown would have the next call of the same model skip the deployment instead).
@routes(lambda down, healthy, n: {
    **{asked: {"deployments": [deployment(n.a, down, "ROUTE_KEY_A")], "fallbacks": [n.mini]}
       for asked in (n.four_o, n.four_one, n.four_one_mini)},
    n.mini: {"deployments": [deployment(n.b, healthy, "ROUTE_KEY_B")]}})
def test_item_20_after_a_fallback_the_answer_names_the_model_that_answered(routed, upstreams):
    down, healthy = upstreams
    down.always(status=503)
    healthy.always(content="84.", usage=USAGE)
    n = routed.names
    api = routed_client(routed)

    whole = api.chat.completions.create(model=n.four_o, messages=ASK)
    chunks = list(api.chat.completions.create(model=n.four_one, messages=ASK, stream=True,
                                              stream_options={"include_usage": True}))
    response = api.responses.create(model=n.four_one_mini, input="What is 12*7?")

    assert whole.model == n.mini and whole.choices[0].message.content == "84."
    assert {chunk.model for chunk in chunks} == {n.mini}
    assert response.model == n.mini
    assert len(down.requests) == 3 and len(healthy.requests) == 3  # each call failed over after its own try
    assert_exact()


def test_item_20_the_upstreams_system_fingerprint_is_passed_through(gateway, openai_stub):
    openai_stub.always(content="The answer is 84.", usage=USAGE)  # the stub sends system_fingerprint "fp_stub"

    whole = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    chunks = list(client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True,
                                                          stream_options={"include_usage": True}))
    local = client(gateway).chat.completions.create(model="local-echo-1", messages=ASK)

    assert whole.system_fingerprint == "fp_stub"
    assert len(chunks) > 3 and {chunk.system_fingerprint for chunk in chunks} == {"fp_stub"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "The answer is 84."
    assert local.system_fingerprint is None  # a model that sends none: null, as OpenAI's may be


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_upstreams_system_fingerprint_is_passed_through_with_n_choices_on_the_run_path(gateway, openai_stub,
                                                                                            alice, stream):
    openai_stub.reply(content="A one.", more_choices=["B two."], usage=USAGE)  # with system_fingerprint "fp_stub"
    kept = {"X-Chatter-Conversation": str(ConversationFactory(owner=alice).pk)}  # the run path

    answer = client(gateway, default_headers=kept).chat.completions.create(model="gpt-4o-mini", messages=ASK, n=2,
                                                                           stream=stream)

    parts = list(answer) if stream else [answer]
    assert {part.system_fingerprint for part in parts} == {"fp_stub"}
    assert {choice.index for part in parts for choice in part.choices} == {0, 1}


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "nope"}}]},
     "tools.0.function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]}, "tools.0.function.strict"),
    ({"stream": "true"}, "stream"),
    ({"logprobs": 1}, "logprobs"),
    ({"parallel_tool_calls": "false"}, "parallel_tool_calls"),
    ({"temperature": "0.5"}, "temperature"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"n": True}, "n"),
])
def test_item_20_a_parameter_of_the_wrong_type_is_a_400_naming_it(gateway, openai_stub, body, param):
    with pytest.raises(openai.BadRequestError) as refused:
        retrying(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, extra_body=body)

    assert (refused.value.param, refused.value.code) == (param, "validation_error")
    assert param in refused.value.message
    assert not WorkflowExecution.objects.exists() and not openai_stub.requests


def test_item_20_a_responses_tool_whose_parameters_are_no_object_is_a_400_naming_them(gateway, openai_stub):
    with pytest.raises(openai.BadRequestError) as refused:
        retrying(gateway).responses.create(model="gpt-4o-mini", input="hi", tools=[
            {"type": "function", "name": "f", "parameters": "nope"}])

    assert refused.value.param == "tools.0.parameters"
    assert not WorkflowExecution.objects.exists() and not openai_stub.requests
