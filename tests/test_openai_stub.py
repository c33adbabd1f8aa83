"""The OpenAI stub, driven by the real `openai` client: what Chatter's provider tests stand on."""
import json

import httpx
import openai
import pytest
from openai import OpenAI

from tests.fixtures_openai import openai_stub  # noqa: F401 - the fixture, until conftest registers it
from tests.openai_stub import OpenAIStub, split_words

USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "total_tokens": 120,
    "prompt_tokens_details": {"cached_tokens": 40},
    "completion_tokens_details": {"reasoning_tokens": 5},
}
MESSAGES = [{"role": "user", "content": "What is 12*7?"}]


@pytest.fixture
def client(openai_stub):  # noqa: F811
    return OpenAI(base_url=openai_stub.base_url, api_key="sk-test", max_retries=0, timeout=10)


def test_it_answers_a_blocking_completion(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="It is 84.", usage=USAGE, model="gpt-4o-mini")

    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "It is 84."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 100
    assert completion.usage.completion_tokens == 20
    assert completion.usage.total_tokens == 120
    assert completion.usage.prompt_tokens_details.cached_tokens == 40
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5


def test_it_records_each_request_with_its_headers(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="ok")

    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)

    [request] = openai_stub.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body == {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0.2}
    assert openai_stub.last_request is request
    assert openai_stub.pending == 0


def test_it_omits_usage_when_scripted_without(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="no usage here", usage=None)

    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.usage is None
    assert completion.choices[0].message.content == "no usage here"


def test_it_answers_with_tool_calls(openai_stub, client):  # noqa: F811
    openai_stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}}], usage=USAGE)

    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "12*7"}


def test_it_streams_words_and_a_final_usage_chunk(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="The answer is 84.", usage=USAGE)

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["The ", "answer ", "is ", "84."]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == 100
    assert last.usage.completion_tokens == 20
    assert last.usage.total_tokens == 120
    assert last.usage.prompt_tokens_details.cached_tokens == 40
    assert last.usage.completion_tokens_details.reasoning_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert openai_stub.last_request.body["stream_options"] == {"include_usage": True}


def test_it_sends_no_usage_chunk_unless_the_request_asks_for_it(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="Hello there", usage=USAGE)

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there"


def test_it_streams_the_whole_content_in_one_chunk_when_asked(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="one piece only", chunk_words=False)

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    assert [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content] == ["one piece only"]


def test_it_streams_tool_calls_as_deltas(openai_stub, client):  # noqa: F811
    openai_stub.reply(
        tool_calls=[
            {"name": "calculator", "arguments": {"expression": "12*7"}},
            {"name": "current_time", "arguments": {}, "id": "call_fixed"},
        ],
        usage=USAGE,
    )

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )

    calls: dict[int, dict] = {}
    for c in chunks:
        for delta in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert calls[0]["id"].startswith("call_")
    assert (calls[0]["name"], json.loads(calls[0]["arguments"])) == ("calculator", {"expression": "12*7"})
    assert calls[1] == {"id": "call_fixed", "name": "current_time", "arguments": "{}"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.total_tokens == 120


def test_it_streams_tool_call_arguments_in_fragments_and_can_break_between_them(openai_stub, client):  # noqa: F811
    arguments = json.dumps({"expression": "12*7"})
    openai_stub.reply(tool_calls=[{"name": "calculator", "arguments": arguments}], argument_chunk_chars=5)
    openai_stub.reply(tool_calls=[{"name": "calculator", "arguments": arguments}], argument_chunk_chars=5,
                      fault="reset", fault_after=4)  # the role, the call's header, two fragments

    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    fragments = [d.function.arguments for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert fragments == ["", *(arguments[i:i + 5] for i in range(0, len(arguments), 5))]

    received = []
    with pytest.raises(openai.APIConnectionError):
        for c in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            received.extend(d.function.arguments for d in (c.choices[0].delta.tool_calls or []))
    assert received == ["", arguments[:5], arguments[5:10]]


def test_it_answers_a_scripted_error_status(openai_stub, client):  # noqa: F811
    openai_stub.reply(status=429)

    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raised.value.status_code == 429
    assert raised.value.body["type"] == "requests"
    assert raised.value.body["code"] == "rate_limit_exceeded"


def test_it_answers_a_scripted_error_body(openai_stub, client):  # noqa: F811
    body = {"error": {"message": "model not found", "type": "invalid_request_error", "code": "model_not_found"}}
    openai_stub.reply(status=404, error_body=body)

    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-nope", messages=MESSAGES, stream=True)

    assert raised.value.body == body["error"]
    assert "model not found" in str(raised.value)


def test_it_answers_500_when_no_reply_is_scripted(openai_stub, client):  # noqa: F811
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert raised.value.status_code == 500
    assert "no scripted reply" in raised.value.body["message"]
    assert len(openai_stub.requests) == 1


def test_it_answers_replies_in_the_order_scripted(openai_stub, client):  # noqa: F811
    openai_stub.reply(content="first").reply(content="second", model="gpt-4o")

    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    second = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert (first.choices[0].message.content, first.model) == ("first", "gpt-4o-mini")
    assert (second.choices[0].message.content, second.model) == ("second", "gpt-4o")


def test_a_delayed_reply_lets_the_client_time_out(openai_stub):  # noqa: F811
    openai_stub.reply(content="too late", delay_s=1)
    impatient = OpenAI(base_url=openai_stub.base_url, api_key="sk-test", max_retries=0, timeout=0.2)

    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_unknown_paths_are_404_and_consume_no_reply(openai_stub):  # noqa: F811
    openai_stub.reply(content="kept")

    response = httpx.post(f"{openai_stub.base_url}/images/generations", json={"prompt": "x"})

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert openai_stub.pending == 1


def test_it_stops_and_frees_its_port():
    with OpenAIStub() as stub:
        base_url = stub.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{base_url}/chat/completions", json={}, timeout=2)


@pytest.mark.parametrize("text", ["", "one", "The answer is 84.", "  lead and trail  ", "a\nb\tc"])
def test_word_chunks_join_back_to_the_text(text):
    assert "".join(split_words(text)) == text
