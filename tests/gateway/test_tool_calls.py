"""Tool calls through the gateway as OpenAI has them: the arguments a model wrote are handed over as it wrote them,
valid JSON or not, streamed fragment by fragment as they came; a client's assistant message with tool_calls and no
content is accepted and its calls relayed as they came; a client's malformed tool calls are a 400 naming the param,
and no run."""
import json

import openai
import pytest

from conversations.models import Message
from tests.factories import ConversationFactory
from tests.gateway.conftest import client
from workflows.models import WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
CALC_TOOL = {"type": "function", "function": {
    "name": "calculator", "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}
ASKED = [{"role": "user", "content": "What is 2+3, and the weather in Paris?"}]
# What a real llama.cpp server streamed; a call cut off mid-object (LangChain would repair it into one); one valid,
# written compactly (a re-encoding would add spaces).
SENT = [("call_1", "calculator", '2+3"}'), ("call_2", "get_weather", '{"city": "Par'),
        ("call_3", "get_weather", '{"city":"Lyon"}')]
FRAGMENT = 4  # the upstream streams arguments in 4-character fragments


def upstream_tool_calls(openai_stub) -> None:
    openai_stub.reply(tool_calls=[{"id": i, "name": n, "arguments": a} for i, n, a in SENT], usage=USAGE,
                      argument_chunk_chars=FRAGMENT)


def test_it_hands_over_arguments_as_the_upstream_sent_them_valid_json_or_not(gateway, openai_stub, alice):
    conversation = ConversationFactory(owner=alice, title="tools")
    upstream_tool_calls(openai_stub)

    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASKED, tools=[CALC_TOOL],
        extra_headers={"X-Chatter-Conversation": str(conversation.pk)})
    completion = raw.parse()

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    got = [(call.id, call.type, call.function.name, call.function.arguments) for call in choice.message.tool_calls]
    assert got == [(i, "function", n, a) for i, n, a in SENT]
    execution = WorkflowExecution.objects.get(pk=raw.headers["x-chatter-execution"])
    assert execution.status == "completed" and execution.total_tokens == 30
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert [(c["id"], c["name"], c["arguments"], c["args"]) for c in reply.tool_calls] == [
        ("call_1", "calculator", '2+3"}', None), ("call_2", "get_weather", '{"city": "Par', None),
        ("call_3", "get_weather", '{"city":"Lyon"}', {"city": "Lyon"})]


def test_it_streams_the_argument_fragments_as_they_came(gateway, openai_stub):
    upstream_tool_calls(openai_stub)

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASKED, tools=[CALC_TOOL], stream=True,
            stream_options={"include_usage": True}) as raw:
        chunks = list(raw.parse())
        execution_id = raw.headers["x-chatter-execution"]

    deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    firsts = [(d.index, d.id, d.type, d.function.name) for d in deltas if d.id]
    assert firsts == [(index, i, "function", n) for index, (i, n, _) in enumerate(SENT)]
    fragments = [(d.index, d.function.arguments) for d in deltas if d.function.arguments]
    assert fragments == [(index, a[start:start + FRAGMENT]) for index, (_, _, a) in enumerate(SENT)
                         for start in range(0, len(a), FRAGMENT)]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"] and chunks[-1].usage.total_tokens == 30
    output = WorkflowExecution.objects.get(pk=execution_id).output_data
    assert [call["function"]["arguments"] for call in output["tool_calls"]] == [a for _, _, a in SENT]


def test_an_assistant_message_with_tool_calls_and_no_content_key_is_relayed_as_it_came(gateway, openai_stub):
    openai_stub.reply(content="5, and it rains in Paris.", usage=USAGE)
    followed = [*ASKED, {"role": "assistant", "tool_calls": [
        {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in SENT]},
        *({"role": "tool", "tool_call_id": i, "content": f"result of {i}"} for i, _, _ in SENT)]

    completion = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=followed, tools=[CALC_TOOL])

    assert completion.choices[0].message.content == "5, and it rains in Paris."
    relayed = openai_stub.last_request.body["messages"]
    assert [m["role"] for m in relayed] == ["user", "assistant", "tool", "tool", "tool"]
    assert sorted((c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])
                   if c["id"] == "call_3" else c["function"]["arguments"]) for c in relayed[1]["tool_calls"]) == [
        ("call_1", "calculator", '2+3"}'), ("call_2", "get_weather", '{"city": "Par'),
        ("call_3", "get_weather", {"city": "Lyon"})]
    assert [m["tool_call_id"] for m in relayed[2:]] == ["call_1", "call_2", "call_3"]
    assert WorkflowExecution.objects.get().status == "completed"


# --- a client's mistakes: 400 in OpenAI's shape, naming the param, and no run ------------------------------------


def call(function: dict | None = None, **fields) -> dict:
    return {"id": "call_1", "type": "function", "function": function or {"name": "calculator", "arguments": "{}"},
            **fields}


def assistant(*calls, **fields) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": list(calls), **fields}


def answered(*ids) -> list[dict]:
    return [{"role": "tool", "tool_call_id": i, "content": "5"} for i in ids]


MALFORMED = {
    "missing id": ([assistant({"type": "function", "function": {"name": "calculator", "arguments": "{}"}})],
                   "messages.1.tool_calls.0.id"),
    "arguments not a string": ([assistant(call({"name": "calculator", "arguments": {"expression": "2+3"}})),
                                *answered("call_1")], "messages.1.tool_calls.0.function.arguments"),
    "arguments a number": ([assistant(call({"name": "calculator", "arguments": 5})), *answered("call_1")],
                           "messages.1.tool_calls.0.function.arguments"),
    "unknown type": ([assistant(call(type="code_interpreter")), *answered("call_1")],
                     "messages.1.tool_calls.0.type"),
    "no function": ([assistant({"id": "call_1", "type": "function"}), *answered("call_1")],
                    "messages.1.tool_calls.0.function"),
    "no function name": ([assistant(call({"arguments": "{}"})), *answered("call_1")],
                         "messages.1.tool_calls.0.function.name"),
    "a call that is not an object": ([assistant("call_1"), *answered("call_1")], "messages.1.tool_calls.0"),
    "an unknown field in a call": ([assistant(call(code="x")), *answered("call_1")], "messages.1.tool_calls.0.code"),
    "two calls with one id": ([assistant(call(), call()), *answered("call_1")], "messages.1.tool_calls"),
    "a tool message answering nothing": ([assistant(call()), *answered("call_1", "call_9")],
                                         "messages.3.tool_call_id"),
    "a tool message with no call before it": (answered("call_1"), "messages.1.tool_call_id"),
    "a call left unanswered": ([assistant(call(), call(id="call_2")), *answered("call_2"),
                                {"role": "user", "content": "and?"}], "messages.1.tool_calls"),
    "tool calls on a user message": ([{"role": "user", "content": "hi", "tool_calls": [call()]}],
                                     "messages.1.tool_calls"),
    "a user message without content": ([{"role": "user"}], "messages.1.content"),
    "an assistant message without content or tool calls": ([{"role": "assistant"}], "messages.1.content"),
}


@pytest.mark.parametrize("messages, param", MALFORMED.values(), ids=MALFORMED.keys())
def test_it_refuses_malformed_tool_calls_with_a_400_naming_the_param(gateway_api, messages, param):
    response = gateway_api.post("/v1/chat/completions", {
        "model": "local-echo-1", "messages": [{"role": "user", "content": "What is 2+3?"}, *messages]}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "validation_error", param)
    assert param in error["message"]
    assert not WorkflowExecution.objects.exists()


@pytest.mark.parametrize("content", [None, "", "Let me compute it."], ids=["null", "empty", "text"])
def test_it_accepts_an_assistant_message_with_tool_calls_whatever_its_content(gateway_api, content):
    response = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": [
        {"role": "user", "content": "What is 2+3?"}, assistant(call(), content=content), *answered("call_1"),
        {"role": "user", "content": "Thanks"}]}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"]
    assert WorkflowExecution.objects.get().status == "completed"


def test_it_accepts_arguments_that_are_not_json_from_the_client(gateway_api):
    response = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": [
        {"role": "user", "content": "What is 2+3?"},
        assistant(call({"name": "calculator", "arguments": '2+3"}'})), *answered("call_1")]}, format="json")

    assert response.status_code == 200, response.content
    assert WorkflowExecution.objects.get().status == "completed"


def test_a_malformed_call_from_the_official_client_is_a_bad_request_never_a_502(gateway, openai_stub):
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[
            *ASKED, {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                "name": "calculator", "arguments": "{}"}}]}])

    assert (refused.value.status_code, refused.value.param) == (400, "messages.1.tool_calls.0.id")
    assert not WorkflowExecution.objects.exists() and not openai_stub.requests
