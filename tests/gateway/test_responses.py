"""POST /v1/responses, OpenAI's Responses API for text and function tools, through OpenAI's own client against a
real daphne server whose upstream is the OpenAI stub: the input items reach the upstream as chat messages (the
`instructions` as the system prompt), the reply comes back as output items with the usage and cost as stored,
function calls go out and their outputs come back, and `previous_response_id` goes on from a response of yours
(another user's is not found); bad input is a 400 and no run."""
from decimal import Decimal

import openai
import pytest

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
    "a stream": ({"stream": True}, "stream"),
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
