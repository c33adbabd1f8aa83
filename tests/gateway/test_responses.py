"""POST /v1/responses, OpenAI's Responses API for text and function tools, through OpenAI's own client against a
real daphne server whose upstream is the OpenAI stub: the input items reach the upstream as chat messages (the
`instructions` as the system prompt), the reply comes back as output items with the usage and cost as stored,
function calls go out and their outputs come back, and `previous_response_id` goes on from a response of yours
(another user's is not found); bad input is a 400 and no run. Streamed (`stream: true`), through the SDK's
`responses.create(stream=True)` and `responses.stream(…)` helpers, sync and async, and LangChain's
`ChatOpenAI(use_responses_api=True)`: the Responses API's events, numbered, with text and function-call deltas as
the upstream streamed them, ending with `response.completed` whose usage is what the run stored, or with
`response.failed` and the usage recorded so far."""
import asyncio
from decimal import Decimal
from io import StringIO

import openai
import pytest
from django.core.management import call_command
from langchain_openai import ChatOpenAI

from conversations.models import Message
from tests.factories import ApiTokenFactory, ConversationFactory
from tests.gateway.conftest import client
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

USAGE = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35,
         "prompt_tokens_details": {"cached_tokens": 16}, "completion_tokens_details": {"reasoning_tokens": 2}}
COST = ((Decimal(14) * Decimal("0.15") + Decimal(16) * Decimal("0.075") + Decimal(5) * Decimal("0.60"))
        / 10**6).quantize(Decimal("0.00000001"))
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def assert_recorded(response, request_id) -> None:
    """The response's usage is what the run stored, with the cost as priced, and every aggregate is exact."""
    execution = WorkflowExecution.objects.get(pk=request_id)
    assert response.id == f"resp_{execution.pk}" and execution.workflow_type == "gateway"
    (call,) = LLMCall.objects.filter(execution=execution)
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (30, 5, 35) == (
        execution.prompt_tokens, execution.completion_tokens, execution.total_tokens)
    assert usage.input_tokens_details.cached_tokens == call.cached_prompt_tokens == 16
    assert usage.output_tokens_details.reasoning_tokens == call.reasoning_tokens == 2
    assert Decimal(str(usage.model_extra["cost"])) == execution.cost == COST
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 1 (SystemExit) on any drift


def test_a_text_input_with_instructions_is_answered_as_a_response(gateway, openai_stub):
    openai_stub.reply(content="84.", usage=USAGE)

    raw = client(gateway).responses.with_raw_response.create(
        model="gpt-4o-mini", instructions="Be brief.", input="What is 12*7?", max_output_tokens=20, temperature=0.1,
        store=True)
    response = raw.parse()

    sent = openai_stub.last_request.body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12*7?"}]
    assert (sent["max_completion_tokens"], sent["temperature"]) == (20, 0.1) and "store" not in sent
    assert response.output_text == "84." and response.status == "completed" and response.object == "response"
    assert raw.headers["x-chatter-ignored"] == "store"
    assert_recorded(response, raw.headers["x-request-id"])


def test_its_parameters_reach_the_upstream_in_the_chat_apis_names(gateway, openai_stub):
    openai_stub.reply(content='{"city": "Paris"}', usage=USAGE)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

    raw = client(gateway).responses.with_raw_response.create(
        model="gpt-4o-mini", input="Where?", text={"format": {"type": "json_schema", "name": "place", "schema": schema,
                                                              "strict": True}},
        reasoning={"effort": "low"}, tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False, top_p=0.5, user="end-user-7", metadata={"team": "search"}, service_tier="flex")

    sent = openai_stub.last_request.body
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "place", "schema": schema, "strict": True}}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (sent["reasoning_effort"], sent["parallel_tool_calls"], sent["top_p"], sent["user"]) == (
        "low", False, 0.5, "end-user-7")
    assert not {"metadata", "service_tier"} & set(sent) and raw.headers["x-chatter-ignored"] == "metadata, service_tier"
    response = raw.parse()
    assert response.output_text == '{"city": "Paris"}' and response.metadata == {"team": "search"}
    assert_recorded(response, raw.headers["x-request-id"])


def test_function_calls_go_out_and_their_outputs_come_back_on_the_previous_response(gateway, openai_stub):
    openai_stub.reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}],
                      usage=USAGE)
    openai_stub.reply(content="Sunny in Paris.", usage=USAGE)
    api = client(gateway)

    first = api.responses.create(model="gpt-4o-mini", instructions="Use tools.", tools=[WEATHER],
                                 input=[{"role": "user", "content": [{"type": "input_text", "text": "Paris?"}]}])
    (call,) = first.output
    assert (call.type, call.call_id, call.name, call.arguments) == ("function_call", "call_w1", "get_weather",
                                                                    '{"city": "Paris"}')
    sent = openai_stub.requests[0].body
    assert sent["tools"] == [{"type": "function", "function": {k: WEATHER[k] for k in (
        "name", "description", "parameters")}}]

    second = api.responses.create(model="gpt-4o-mini", previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": "call_w1", "output": "sunny, 21 C"}])

    relayed = openai_stub.last_request.body["messages"]
    assert [m["role"] for m in relayed] == ["user", "assistant", "tool"]  # the instructions are not carried over
    assert relayed[0]["content"] == [{"type": "text", "text": "Paris?"}]
    assert relayed[1]["tool_calls"][0]["id"] == "call_w1" and relayed[2] == {
        "role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21 C"}
    assert second.output_text == "Sunny in Paris." and second.previous_response_id == first.id


def test_a_conversation_goes_on_from_a_previous_response_and_can_be_kept(gateway, openai_stub, alice):
    conversation = ConversationFactory(owner=alice, title="responses")
    openai_stub.reply(content="Hello Ada.", usage=USAGE).reply(content="Your name is Ada.", usage=USAGE)
    api = client(gateway)
    kept = {"X-Chatter-Conversation": str(conversation.pk)}

    first = api.responses.create(model="gpt-4o-mini", input="I am Ada.", extra_headers=kept)
    second = api.responses.create(model="gpt-4o-mini", input="Who am I?", previous_response_id=first.id,
                                  extra_headers=kept)

    assert [(m["role"], m["content"]) for m in openai_stub.last_request.body["messages"]] == [
        ("user", "I am Ada."), ("assistant", "Hello Ada."), ("user", "Who am I?")]
    assert second.output_text == "Your name is Ada."
    assert list(Message.objects.filter(conversation=conversation).order_by("sequence").values_list(
        "role", "content")) == [("user", "I am Ada."), ("assistant", "Hello Ada."), ("user", "Who am I?"),
                                ("assistant", "Your name is Ada.")]


def test_another_users_previous_response_is_not_found_and_nothing_runs(gateway, openai_stub, bob):
    openai_stub.reply(content="Hello Ada.", usage=USAGE)
    first = client(gateway).responses.create(model="gpt-4o-mini", input="I am Ada.")
    bobs = openai.OpenAI(base_url=gateway.v1, api_key=ApiTokenFactory(user=bob, scopes=["gateway"]).key,
                         max_retries=0)

    with pytest.raises(openai.NotFoundError) as refused:
        bobs.responses.create(model="gpt-4o-mini", input="Who am I?", previous_response_id=first.id)

    assert (refused.value.code, refused.value.param) == ("previous_response_not_found", "previous_response_id")
    assert len(openai_stub.requests) == 1 and WorkflowExecution.objects.count() == 1




def test_the_local_model_answers_out_of_the_box(gateway_api):
    response = gateway_api.post("/v1/responses", {"model": "local-echo-1", "input": "Hi"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["output"][0]["content"][0]["text"].startswith("(local model)")
    assert body["usage"]["total_tokens"] == WorkflowExecution.objects.get().total_tokens > 0


REFUSED = {
    "a hosted tool": ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
    "an unknown item": ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
    "no input item": ({"input": []}, "input"),
    "a stream option the API does not have": ({"stream": True, "stream_options": {"include_usage": True}},
                                              "stream_options"),
    "a malformed previous id": ({"previous_response_id": "resp_nope"}, "previous_response_id"),
    "an output without its call": ({"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
                                   "messages.0.tool_call_id"),
    "an unknown text format": ({"text": {"format": {"type": "xml"}}}, "text"),
    "an unknown parameter": ({"conversation": "conv_1"}, "conversation"),
}


@pytest.mark.parametrize("fields, param", REFUSED.values(), ids=REFUSED.keys())
def test_bad_input_is_refused_naming_the_param_and_nothing_runs(gateway_api, fields, param):
    response = gateway_api.post("/v1/responses", {"model": "local-echo-1", "input": "Hi", **fields}, format="json")

    assert response.status_code in (400, 404), response.content
    assert response.json()["error"]["param"] == param
    assert not WorkflowExecution.objects.exists()


# --- streamed -------------------------------------------------------------------------------------------------------
TEXT_EVENTS = ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
               "response.output_text.done", "response.content_part.done", "response.output_item.done"]
CALL_EVENTS = ["response.output_item.added", "response.function_call_arguments.delta",
               "response.function_call_arguments.done", "response.output_item.done"]


def kinds(events) -> list[str]:
    """The events' types in order, each run of deltas as one."""
    named = []
    for event in events:
        if not (event.type.endswith(".delta") and named and named[-1] == event.type):
            named.append(event.type)
    return named


def test_a_streamed_response_sends_the_responses_events_and_completes_with_the_stored_usage(gateway, openai_stub):
    openai_stub.reply(content="Twelve sevens make 84.", usage=USAGE)

    with client(gateway).responses.with_streaming_response.create(
            model="gpt-4o-mini", instructions="Be brief.", input="What is 12*7?", stream=True,
            stream_options={"include_obfuscation": False}) as raw:
        request_id, ignored = raw.headers["x-request-id"], raw.headers["x-chatter-ignored"]
        events = list(raw.parse())

    assert kinds(events) == ["response.created", "response.in_progress", *TEXT_EVENTS, "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == ["Twelve ", "sevens ", "make ", "84."]  # as the upstream streamed it
    text_done = next(event for event in events if event.type == "response.output_text.done")
    assert text_done.text == "Twelve sevens make 84." and events[0].response.status == "in_progress"
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == "Twelve sevens make 84."
    assert completed.output[0].id == text_done.item_id == events[2].item.id
    assert_recorded(completed, request_id)
    assert ignored == "stream_options.include_obfuscation"
    sent = openai_stub.last_request.body
    assert sent["stream"] is True and sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_the_stream_helper_streams_text_then_function_calls_and_goes_on_from_them(gateway, openai_stub):
    openai_stub.reply(content="Let me look.", tool_calls=[
        {"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}},
        {"id": "call_w2", "name": "get_weather", "arguments": {"city": "Rome"}}], usage=USAGE, argument_chunk_chars=5)
    openai_stub.reply(content="Sunny in both.", usage=USAGE)
    api = client(gateway)

    with api.responses.stream(model="gpt-4o-mini", tools=[WEATHER], input="Paris and Rome?") as stream:
        events = list(stream)
        first = stream.get_final_response()

    assert kinds(events) == ["response.created", "response.in_progress", *TEXT_EVENTS, *CALL_EVENTS, *CALL_EVENTS,
                             "response.completed"]
    arguments = [event for event in events if event.type == "response.function_call_arguments.delta"]
    assert len(arguments) == 8 and {event.output_index for event in arguments} == {1, 2}
    assert arguments[-1].snapshot == '{"city": "Rome"}'  # the helper's accumulation of the deltas
    done = [event.arguments for event in events if event.type == "response.function_call_arguments.done"]
    assert done == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert [(item.type, getattr(item, "call_id", None)) for item in first.output] == [
        ("message", None), ("function_call", "call_w1"), ("function_call", "call_w2")]
    assert first.output_text == "Let me look." and first.output[2].arguments == '{"city": "Rome"}'
    assert_recorded(first, first.id.removeprefix("resp_"))

    second = api.responses.create(model="gpt-4o-mini", previous_response_id=first.id, tools=[WEATHER], stream=True,
                                  input=[{"type": "function_call_output", "call_id": "call_w1", "output": "sunny"},
                                         {"type": "function_call_output", "call_id": "call_w2", "output": "sunny"}])
    completed = [event for event in second if event.type == "response.completed"][0].response

    relayed = openai_stub.last_request.body["messages"]
    assert [m["role"] for m in relayed] == ["user", "assistant", "tool", "tool"]
    assert [call["id"] for call in relayed[1]["tool_calls"]] == ["call_w1", "call_w2"]
    assert relayed[1]["content"] == "Let me look."
    assert completed.output_text == "Sunny in both." and completed.previous_response_id == first.id
    assert_recorded(completed, completed.id.removeprefix("resp_"))


def test_the_async_client_streams_a_response_too(gateway, openai_stub):
    openai_stub.reply(content="Eighty four.", usage=USAGE).reply(content="Still 84.", usage=USAGE)

    async def calls():
        async with openai.AsyncOpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30) as api:
            async with api.responses.stream(model="gpt-4o-mini", input="What is 12*7?") as stream:
                texts = [event.delta async for event in stream if event.type == "response.output_text.delta"]
                final = await stream.get_final_response()
            raw = await api.responses.create(model="gpt-4o-mini", input="And now?", stream=True)
            return texts, final, [event async for event in raw]

    texts, final, events = asyncio.run(calls())

    assert "".join(texts) == final.output_text == "Eighty four."
    assert_recorded(final, final.id.removeprefix("resp_"))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Still 84."
    assert_recorded(events[-1].response, events[-1].response.id.removeprefix("resp_"))


def test_a_stream_the_upstream_breaks_ends_with_response_failed_and_the_usage_recorded(gateway, openai_stub):
    openai_stub.reply(content="one two three four five six", usage=USAGE, fault="reset", fault_after=3)

    events = list(client(gateway).responses.create(model="gpt-4o-mini", input="Count.", stream=True))

    assert kinds(events)[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                                 "response.content_part.added", "response.output_text.delta"]
    failed = events[-1]
    assert failed.type == "response.failed" and [e.sequence_number for e in events] == list(range(len(events)))
    execution = WorkflowExecution.objects.get(pk=failed.response.id.removeprefix("resp_"))
    assert execution.status == "failed" and failed.response.status == "failed"
    # the caller's words: the model and the request id; the upstream's URL is the run's (and the log's) only
    assert (failed.response.error.code, failed.response.error.message) == (
        execution.error_type, f"The connection to the upstream of model `gpt-4o-mini` failed. Request id: {execution.pk}.")
    assert openai_stub.base_url in execution.error_message
    (item,) = failed.response.output
    assert item.status == "incomplete" and item.content[0].text == "one two "
    usage = failed.response.usage
    assert (usage.input_tokens, usage.output_tokens) == (execution.prompt_tokens, execution.completion_tokens)
    assert execution.total_tokens > 0 and Decimal(str(usage.model_extra["cost"])) == execution.cost
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())


def test_langchain_streams_a_response_with_its_tool_calls_and_the_stored_usage(gateway, openai_stub):
    openai_stub.reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}],
                      usage=USAGE, argument_chunk_chars=4)
    openai_stub.reply(content="Sunny in Paris.", usage=USAGE)
    model = ChatOpenAI(model="gpt-4o-mini", base_url=gateway.v1, api_key=gateway.key, max_retries=0,
                       use_responses_api=True, streaming=True)

    called, text = (sum(chunks[1:], chunks[0]) for chunks in (
        list(model.bind_tools([WEATHER]).stream("Weather in Paris?")), list(model.stream("And in words?"))))

    assert [(call["id"], call["name"], call["args"]) for call in called.tool_calls] == [
        ("call_w1", "get_weather", {"city": "Paris"})]
    assert text.text == "Sunny in Paris."
    for message in (called, text):
        execution = WorkflowExecution.objects.get(pk=message.response_metadata["id"].removeprefix("resp_"))
        assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (
            execution.prompt_tokens, execution.completion_tokens) == (30, 5)
        assert message.usage_metadata["input_token_details"]["cache_read"] == 16
        assert execution.cost == COST
    assert openai_stub.requests[0].body["stream"] is True
    call_command("reconcile_aggregates", stdout=StringIO())
