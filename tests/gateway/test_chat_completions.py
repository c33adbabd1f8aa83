"""The OpenAI-compatible gateway through OpenAI's own Python client (sync, async, streaming) against a real daphne
server whose upstream is the OpenAI stub: answers pass through, the `usage` the client gets is what Chatter
stored, each call is a `gateway` execution with its LLM call, events and audit rows, tools and tool calls pass
through, a conversation can keep the exchange, a client that goes away mid-stream is still billed, and errors
come in OpenAI's shape."""
import asyncio
import time
from decimal import Decimal

import httpx
import openai
import pytest

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from conversations.models import Message
from tests.factories import ApiTokenFactory, BudgetFactory, ConversationFactory
from tests.gateway.conftest import client
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, LLMCall, WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12*7?"}]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def stored(execution_id) -> WorkflowExecution:
    return WorkflowExecution.objects.get(pk=execution_id)


def assert_billed_as_reported(execution: WorkflowExecution, usage) -> None:
    """The usage the client got is what Chatter stored: on the execution and on its one LLM call, priced."""
    assert execution.workflow_type == "gateway" and execution.status == "completed", execution.error_message
    (call,) = LLMCall.objects.filter(execution=execution)
    got = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert got == (execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) \
        == (call.prompt_tokens, call.completion_tokens, call.total_tokens) == tuple(USAGE.values())
    assert (call.provider, call.requested_model, call.estimated) == ("openai", "gpt-4o-mini", False)
    expected = (Decimal(21) * Decimal("0.15") + Decimal(9) * Decimal("0.60")) / 10**6
    assert execution.cost == call.cost == expected.quantize(Decimal("0.00000001"))
    assert_all(execution)


def test_a_sync_call_answers_and_bills_what_the_provider_reported(gateway, openai_stub, alice):
    openai_stub.reply(content="84.", usage=USAGE)

    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, temperature=0.2, max_tokens=50, user="end-user-7", seed=3)
    completion = raw.parse()

    assert completion.choices[0].message.content == "84." and completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == "gpt-4o-mini"
    execution = stored(raw.headers["x-chatter-execution"])
    assert completion.id == f"chatcmpl-{execution.pk.hex}"
    assert_billed_as_reported(execution, completion.usage)
    assert execution.api_key.name == "gateway" and execution.owner == alice and execution.conversation_id is None
    sent = openai_stub.last_request.body
    assert sent["messages"] == ASK and sent["model"] == "gpt-4o-mini"
    assert (sent["temperature"], sent["user"], sent["seed"]) == (0.2, "end-user-7", 3)
    assert sent["max_tokens"] == 50  # the body goes on as the client sent it (gateway.passthrough)
    events = list(ExecutionEvent.objects.filter(execution=execution).values_list("event", flat=True))
    assert events[0] == "workflow_started" and "token_usage" in events and events[-1] == "workflow_completed"
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    audited = set(AuditEvent.objects.filter(target_id=str(execution.pk)).values_list("action", flat=True))
    assert {"execution.started", "execution.completed"} <= audited


def test_gateway_runs_are_executions_filterable_by_type(gateway, openai_stub, alice):
    openai_stub.reply(content="84.", usage=USAGE)
    client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    reader = ApiTokenFactory(user=alice, scopes=["read"]).key

    listed = httpx.get(f"{gateway.base_url}/api/v1/executions/?workflow_type=gateway",
                       headers={"Authorization": f"Bearer {reader}"}).json()

    assert listed["count"] == 1 and listed["results"][0]["workflow_type"] == "gateway"
    assert httpx.get(f"{gateway.base_url}/api/v1/executions/?workflow_type=chat",
                     headers={"Authorization": f"Token {reader}"}).json()["count"] == 0


def test_a_streamed_call_with_usage_ends_with_the_stored_usage(gateway, openai_stub):
    openai_stub.reply(content="The answer is 84, as twelve sevens make.", usage=USAGE)

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}) as raw:
        execution_id = raw.headers["x-chatter-execution"]
        chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is 84, as twelve sevens make."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert_billed_as_reported(stored(execution_id), chunks[-1].usage)
    assert openai_stub.last_request.body["stream"] is True  # Chatter streams from upstream too


def test_without_include_usage_a_stream_has_no_usage_chunk_and_is_billed_all_the_same(gateway, openai_stub):
    openai_stub.reply(content="84.", usage=USAGE)

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True) as raw:
        chunks = list(raw.parse())
        execution_id = raw.headers["x-chatter-execution"]

    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert stored(execution_id).total_tokens == 30


def test_the_async_client_sync_and_streamed(gateway, openai_stub):
    openai_stub.reply(content="84.", usage=USAGE).reply(content="Eighty four.", usage=USAGE)

    async def calls():
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30) as aclient:
            whole = await aclient.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
            stream = await aclient.chat.completions.create(
                model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True})
            chunks = [chunk async for chunk in stream]
            return whole, chunks

    whole, chunks = asyncio.run(calls())

    completion = whole.parse()
    assert completion.choices[0].message.content == "84."
    assert_billed_as_reported(stored(whole.headers["x-chatter-execution"]), completion.usage)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Eighty four."
    streamed = WorkflowExecution.objects.exclude(pk=whole.headers["x-chatter-execution"]).get()
    assert_billed_as_reported(streamed, chunks[-1].usage)


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_tool_calls_pass_through(gateway, openai_stub, stream):
    openai_stub.reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}],
                      usage=USAGE)
    openai_stub.reply(content="Sunny in Paris.", usage=USAGE)
    api = client(gateway)
    asked = [{"role": "user", "content": "Weather in Paris?"}]

    first = api.chat.completions.create(model="gpt-4o-mini", messages=asked, tools=[WEATHER_TOOL],
                                        tool_choice="auto", stream=stream)
    if stream:
        chunks = list(first)
        deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
        assert {delta.index for delta in deltas} == {0}  # one call, in fragments as the upstream streamed it
        call = deltas[0].model_copy(deep=True)
        call.function.arguments = "".join(delta.function.arguments for delta in deltas)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == ["tool_calls"]
    else:
        (call,) = first.choices[0].message.tool_calls
        assert first.choices[0].finish_reason == "tool_calls" and first.choices[0].message.content is None
    assert (call.id, call.function.name, call.function.arguments) == ("call_w1", "get_weather", '{"city": "Paris"}')
    sent = openai_stub.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"

    # The client ran its tool: the second call carries the assistant's tool call and the tool's result.
    followed = [*asked, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21 C"}]
    second = api.chat.completions.create(model="gpt-4o-mini", messages=followed, tools=[WEATHER_TOOL])

    assert second.choices[0].message.content == "Sunny in Paris."
    relayed = openai_stub.requests[-1].body["messages"]
    assert [m["role"] for m in relayed] == ["user", "assistant", "tool"]
    assert relayed[1]["tool_calls"][0]["id"] == "call_w1" and relayed[2]["tool_call_id"] == "call_w1"
    assert WorkflowExecution.objects.filter(tool_calls=0, status="completed").count() == 2  # none ran here


def test_a_conversation_header_appends_the_exchange_with_its_aggregates(gateway, openai_stub, alice):
    conversation = ConversationFactory(owner=alice, title="via the gateway")
    openai_stub.reply(content="84.", usage=USAGE)

    completion = client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=ASK, extra_headers={"X-Chatter-Conversation": str(conversation.pk)})

    conversation.refresh_from_db()
    user, reply = Message.objects.filter(conversation=conversation).order_by("sequence")
    assert (user.role, user.content, reply.role, reply.content) == ("user", "What is 12*7?", "assistant", "84.")
    assert conversation.message_count == 2 and conversation.total_tokens == completion.usage.total_tokens == 30
    assert_all(reply.execution)


def test_another_users_conversation_is_not_found_and_nothing_is_run(gateway, openai_stub, bob):
    bobs = ConversationFactory(owner=bob, title="bob's")

    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK,
                                                extra_headers={"X-Chatter-Conversation": str(bobs.pk)})

    assert not WorkflowExecution.objects.exists() and not openai_stub.requests


def test_a_client_that_disconnects_mid_stream_is_billed_for_what_the_provider_produced(gateway, openai_stub):
    words = " ".join(f"word{i}" for i in range(40))
    openai_stub.reply(content=words, usage=USAGE, chunk_delay_s=0.05)

    with httpx.stream("POST", f"{gateway.v1}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "gpt-4o-mini", "messages": ASK, "stream": True}) as response:
        execution_id = response.headers["x-chatter-execution"]
        lines = response.iter_lines()
        assert next(line for line in lines if '"word0' in line)  # reading has begun; now go away

    deadline = time.monotonic() + 20
    while stored(execution_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    execution = stored(execution_id)
    assert execution.status == "completed" and execution.output_data["content"] == words
    assert (execution.total_tokens, LLMCall.objects.get(execution=execution).estimated) == (30, False)


def test_errors_come_in_openais_shape(gateway, openai_stub, alice):
    with pytest.raises(openai.AuthenticationError) as bad_key:
        openai.OpenAI(base_url=gateway.v1, api_key="not-a-key", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client(gateway).chat.completions.create(model="gpt-99-imaginary", messages=ASK)
    reader = ApiTokenFactory(user=alice, scopes=["read", "chat", "runs"]).key
    with pytest.raises(openai.PermissionDeniedError) as no_scope:
        openai.OpenAI(base_url=gateway.v1, api_key=reader, max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=ASK)
    with pytest.raises(openai.BadRequestError) as bad_input:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "robot", "content": "x"}])

    assert bad_key.value.code == "invalid_api_key" and bad_key.value.type == "authentication_error"
    assert (unknown_model.value.code, unknown_model.value.param) == ("model_not_found", "model")
    assert "gpt-99-imaginary" in unknown_model.value.message
    assert no_scope.value.type == "permission_error" and "gateway" in no_scope.value.message
    assert bad_input.value.param == "messages.0.role" and bad_input.value.type == "invalid_request_error"
    for error in (bad_key, unknown_model, no_scope, bad_input):
        assert set(error.value.body) == {"message", "type", "code", "param"}
    assert not WorkflowExecution.objects.exists() and not openai_stub.requests
    # The missing scope is alice's refusal, audited at once (a bad key's, anonymous, is counted per window).
    (denied,) = AuditEvent.objects.filter(action="access.denied")
    assert denied.actor == alice and denied.data["path"] == "/v1/chat/completions" and denied.data["status"] == 403


def test_a_provider_failure_is_a_502_with_the_run_failed(gateway, openai_stub):
    openai_stub.reply(status=500, error_body={"error": {"message": "bad upstream", "type": "x", "code": None,
                                                        "param": None}})

    with pytest.raises(openai.APIStatusError) as failed:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    assert failed.value.status_code == 502 and failed.value.code == "provider_error"
    execution = stored(failed.value.response.headers["x-chatter-execution"])
    assert (execution.workflow_type, execution.status) == ("gateway", "failed")


# A server reads the upstream's model list once a minute: this test's list needs a server of its own.
@pytest.mark.own_server
def test_models_lists_the_priced_models_the_upstream_serves(gateway, openai_stub):
    openai_stub.served_models = ["gpt-4o-mini", "gpt-4o", "an-unpriced-model"]

    models = client(gateway).models.list()

    owned = {(model.id, model.owned_by) for model in models.data}
    assert owned == {("gpt-4o-mini", "openai"), ("gpt-4o", "openai"), ("local-echo-1", "local"),
                     ("local-embed-1", "local"), ("all-MiniLM-L6-v2", "local")}
    # gpt-4.1 is priced but not served; the unpriced model is served but cannot be billed; anthropic is not set up


def test_a_spent_budget_is_a_429_insufficient_quota_and_no_call(gateway, openai_stub, alice):
    BudgetFactory(owner=alice, period="month", limit_usd="0", mode="hard")

    with pytest.raises(openai.RateLimitError) as refused:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK)

    assert (refused.value.code, refused.value.type) == ("budget_exceeded", "insufficient_quota")
    assert not WorkflowExecution.objects.exists() and not openai_stub.requests
    (row,) = AuditEvent.objects.filter(action="limit.exceeded")
    assert row.data["limit"] == "budget" and row.data["workflow_type"] == "gateway"
