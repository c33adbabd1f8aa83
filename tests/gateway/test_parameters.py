"""The chat completions API's parameters through the gateway, with OpenAI's own client (and LangChain's ChatOpenAI)
against a real daphne server whose upstream is the OpenAI stub: what the upstream understands reaches it (the stub
shows what it received) and its answer comes back (logprobs, `n` choices, legacy function calls); what only OpenAI's
hosted service means is accepted, not sent on, and named in X-Chatter-Ignored; image parts pass through to a
provider that takes them; what cannot be honoured is a 400 naming the parameter, and no run."""
import asyncio
from decimal import Decimal

import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.gateway.conftest import client
from tests.invariants import assert_all
from tests.openai_stub import logprob_entry, split_words
from workflows.models import LLMCall, WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
ASK = [{"role": "user", "content": "What is 12*7?"}]
ANSWER = "It is 84 exactly."


def expected_logprobs(text: str, top: int) -> list[dict]:
    return [logprob_entry(word, i, top) for i, word in enumerate(split_words(text))]


def the_run(execution_id) -> WorkflowExecution:
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "completed", execution.error_message
    assert_all(execution)
    return execution


def test_sampling_parameters_reach_the_upstream_and_logprobs_come_back(gateway, openai_stub):
    openai_stub.reply(content=ANSWER, usage=USAGE)

    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, logprobs=True, top_logprobs=2, logit_bias={"50256": -100}, seed=7,
        reasoning_effort="low", verbosity="low", modalities=["text"], top_p=0.5, stop=["\n\n"],
        prediction={"type": "content", "content": "It is 84"}, frequency_penalty=0.1, presence_penalty=0.2)
    completion = raw.parse()

    sent = openai_stub.last_request.body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2 and sent["logit_bias"] == {"50256": -100}
    assert (sent["seed"], sent["reasoning_effort"], sent["verbosity"], sent["modalities"]) == (7, "low", "low", ["text"])
    assert sent["prediction"] == {"type": "content", "content": "It is 84"} and sent["stop"] == ["\n\n"]
    assert (sent["top_p"], sent["frequency_penalty"], sent["presence_penalty"]) == (0.5, 0.1, 0.2)
    assert completion.choices[0].message.content == ANSWER
    got = [entry.model_dump() for entry in completion.choices[0].logprobs.content]
    assert got == expected_logprobs(ANSWER, 2)
    assert "x-chatter-ignored" not in raw.headers
    assert the_run(raw.headers["x-request-id"]).total_tokens == 30


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_output_format_and_tool_parameters_reach_the_upstream(gateway, openai_stub, stream):
    openai_stub.reply(content='{"answer": 84}', usage=USAGE)
    schema = {"name": "answer", "strict": True, "schema": {
        "type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}}
    tool = {"type": "function", "function": WEATHER}  # not `strict`: OpenAI takes it beside a response format

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, response_format={"type": "json_schema", "json_schema": schema},
            tools=[tool], tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False, max_completion_tokens=33, stream=stream) as raw:
        answer = raw.parse()
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream else \
            answer.choices[0].message.content

    sent = openai_stub.last_request.body
    assert sent["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert (sent["parallel_tool_calls"], sent["max_completion_tokens"], sent["stream"]) == (False, 33, stream)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert text == '{"answer": 84}'
    assert the_run(raw.headers["x-request-id"]).total_tokens == 30


def test_a_stream_carries_the_logprobs_the_upstream_streamed(gateway, openai_stub):
    openai_stub.reply(content=ANSWER, usage=USAGE)

    chunks = list(client(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=ASK, logprobs=True, top_logprobs=1, stream=True))

    assert openai_stub.last_request.body["logprobs"] is True
    streamed = [entry.model_dump() for c in chunks if c.choices and c.choices[0].logprobs
                for entry in c.choices[0].logprobs.content]
    assert streamed == expected_logprobs(ANSWER, 1)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER


def test_langchains_chat_openai_with_logprobs_reads_them(gateway, openai_stub):
    openai_stub.reply(content=ANSWER, usage=USAGE)
    model = ChatOpenAI(model="gpt-4o-mini", base_url=gateway.v1, api_key=gateway.key, max_retries=0, logprobs=True)

    reply = model.invoke("What is 12*7?")

    assert reply.content == ANSWER
    assert reply.response_metadata["logprobs"]["content"] == expected_logprobs(ANSWER, 0)
    assert reply.usage_metadata["total_tokens"] == 30 == WorkflowExecution.objects.get().total_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_n_choices_come_from_one_upstream_call_billed_as_it_reported(gateway, openai_stub, stream):
    usage = {"prompt_tokens": 21, "completion_tokens": 27, "total_tokens": 48}  # the three choices' tokens
    openai_stub.reply(content="Eighty-four.", more_choices=["84.", "It is 84."], usage=usage)

    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, n=3, stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}))
    parsed = raw.parse()
    if stream:
        chunks = list(parsed)
        texts = {index: "".join(c.choices[0].delta.content or "" for c in chunks
                                if c.choices and c.choices[0].index == index) for index in range(3)}
        finished = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
        assert finished == [0, 1, 2]
        reported = chunks[-1].usage
    else:
        texts = {choice.index: choice.message.content for choice in parsed.choices}
        assert [choice.finish_reason for choice in parsed.choices] == ["stop"] * 3
        reported = parsed.usage

    assert texts == {0: "Eighty-four.", 1: "84.", 2: "It is 84."}
    assert openai_stub.last_request.body["n"] == 3 and len(openai_stub.requests) == 1
    execution = the_run(raw.headers["x-request-id"])
    (call,) = LLMCall.objects.filter(execution=execution)
    assert (reported.prompt_tokens, reported.completion_tokens) == (21, 27) == (
        execution.prompt_tokens, execution.completion_tokens) == (call.prompt_tokens, call.completion_tokens)
    assert execution.cost == ((Decimal(21) * Decimal("0.15") + Decimal(27) * Decimal("0.60")) / 10**6).quantize(
        Decimal("0.00000001"))


IGNORED = ("store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
           "prompt_cache_options", "moderation")


def test_what_only_openais_service_means_is_accepted_not_sent_on_and_named(gateway, openai_stub):
    openai_stub.reply(content=ANSWER, usage=USAGE)

    raw = client(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK, store=True, metadata={"team": "search"}, service_tier="flex",
        safety_identifier="user-7", prompt_cache_key="k1", extra_body={
            "prompt_cache_retention": "24h", "prompt_cache_options": {"mode": "auto"}, "moderation": True})

    sent = openai_stub.last_request.body
    assert not set(IGNORED) & set(sent)
    assert raw.headers["x-chatter-ignored"] == ", ".join(IGNORED)
    assert raw.parse().choices[0].message.content == ANSWER


def test_a_streams_obfuscation_option_is_ignored_and_named(gateway, openai_stub):
    openai_stub.reply(content=ANSWER, usage=USAGE)

    with client(gateway).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=ASK, stream=True,
            stream_options={"include_usage": True, "include_obfuscation": False}) as raw:
        chunks = list(raw.parse())
        ignored = raw.headers["x-chatter-ignored"]

    assert ignored == "stream_options.include_obfuscation"
    assert openai_stub.last_request.body["stream_options"] == {"include_usage": True}
    assert chunks[-1].usage.total_tokens == 30


WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_legacy_functions_are_tools_upstream_and_function_calls_back(gateway, openai_stub, stream):
    openai_stub.reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}],
                      usage=USAGE)

    answer = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, functions=[WEATHER],
                                                     function_call={"name": "get_weather"}, stream=stream)
    chunks = list(answer) if stream else []  # read to its end: the run has called the upstream

    sent = openai_stub.last_request.body
    assert sent["tools"] == [{"type": "function", "function": WEATHER}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    if stream:
        deltas = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
        name, arguments = deltas[0].name, "".join(d.arguments or "" for d in deltas)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    else:
        message = answer.choices[0].message
        name, arguments, finish = message.function_call.name, message.function_call.arguments, [
            answer.choices[0].finish_reason]
        assert message.tool_calls is None
    assert (name, arguments, finish) == ("get_weather", '{"city": "Paris"}', ["function_call"])


def test_a_legacy_function_result_is_relayed_as_a_tool_message(gateway, openai_stub):
    openai_stub.reply(content="Sunny in Paris.", usage=USAGE)

    answer = client(gateway).chat.completions.create(model="gpt-4o-mini", functions=[WEATHER], messages=[
        *ASK, {"role": "assistant", "content": None,
               "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"role": "function", "name": "get_weather", "content": "sunny"}])

    relayed = openai_stub.last_request.body["messages"]
    assert [m["role"] for m in relayed] == ["user", "assistant", "tool"]
    (call,) = relayed[1]["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert relayed[2]["tool_call_id"] == call["id"] and relayed[2]["content"] == "sunny"
    assert answer.choices[0].message.content == "Sunny in Paris."


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}


def test_image_parts_pass_through_to_the_openai_upstream(gateway, openai_stub):
    openai_stub.reply(content="A cat.", usage=USAGE)

    answer = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}])

    (message,) = openai_stub.last_request.body["messages"]
    assert message["content"] == [{"type": "text", "text": "What is this?"}, IMAGE]
    assert answer.choices[0].message.content == "A cat."


def test_the_async_client_sends_parameters_alike(gateway, openai_stub):
    openai_stub.reply(content=ANSWER, usage=USAGE)

    async def call():
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0) as aclient:
            return await aclient.chat.completions.create(model="gpt-4o-mini", messages=ASK, logprobs=True, seed=3,
                                                         store=False)

    completion = asyncio.run(call())

    assert openai_stub.last_request.body["seed"] == 3 and "store" not in openai_stub.last_request.body
    assert [e.token for e in completion.choices[0].logprobs.content] == split_words(ANSWER)


# --- what cannot be honoured: a 400 naming the parameter, and no run ---------------------------------------------


REFUSED = {
    "audio output": ({"modalities": ["text", "audio"]}, "modalities"),
    "an audio voice": ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    "top_logprobs without logprobs": ({"top_logprobs": 2}, "top_logprobs"),
    "a logit bias not by token id": ({"logit_bias": {"hello": 5}}, "logit_bias"),
    "a logit bias out of range": ({"logit_bias": {"42": 101}}, "logit_bias.42"),
    "a prediction of another type": ({"prediction": {"type": "diff", "content": "x"}}, "prediction"),
    "tools and functions at once": ({"functions": [WEATHER], "tools": [{"type": "function", "function": WEATHER}]},
                                    "functions"),
    "an unknown stream option": ({"stream_options": {"include_everything": True}}, "stream_options"),
    "a service tier OpenAI has not": ({"service_tier": "gold"}, "service_tier"),
    "an unknown parameter": ({"web_search_options": {}}, "web_search_options"),
    "an image on the text-only local model": (
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, IMAGE]}]}, "messages.0.content"),
    "an image in an assistant message": (
        {"messages": [*ASK, {"role": "assistant", "content": [IMAGE]}]}, "messages.1.content"),
    "a function message answering nothing": (
        {"messages": [*ASK, {"role": "function", "name": "get_weather", "content": "sunny"}]}, "messages.1.name"),
}


@pytest.mark.parametrize("fields, param", REFUSED.values(), ids=REFUSED.keys())
def test_it_refuses_what_it_cannot_honour_naming_the_parameter(gateway_api, fields, param):
    response = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": ASK, **fields},
                                format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert not WorkflowExecution.objects.exists()


def test_the_local_model_takes_the_parameters_it_can_ignore(gateway_api):
    response = gateway_api.post("/v1/chat/completions", {
        "model": "local-echo-1", "messages": ASK, "logprobs": True, "seed": 1, "logit_bias": {"1": 2},
        "reasoning_effort": "high", "store": True}, format="json")

    assert response.status_code == 200, response.content
    assert response["X-Chatter-Ignored"] == "store"
    assert response.json()["choices"][0]["message"]["content"].startswith("(local model)")
