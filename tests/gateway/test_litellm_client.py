"""LiteLLM's SDK as the client of the gateway, as teams call gateways through it
(`litellm.completion(model="openai/<name>", api_base=<chatter>/v1, api_key=<chatter key>)`), against a real daphne
server whose upstream is the OpenAI stub: a call, a streamed call with its usage, logprobs, a tool round, `n` = 2 and
embeddings; each call's stored tokens and cost are what LiteLLM got. Chatter's prices here are not LiteLLM's, so
LiteLLM's figures can only equal Chatter's by reading them: `completion_cost()` of a chat completion reads the cost
an OpenAI-compatible upstream reports in `usage.cost` before its own price map; the cost LiteLLM logs for a call
(its success callbacks' `response_cost`, what its spend tracking records) reads the `x-litellm-response-cost` header
first (its own proxy's), which Chatter sends with every answer not streamed, so an embeddings call (whose usage has
no cost to LiteLLM) is logged at Chatter's cost too; completion_cost() of an embeddings response alone prices it by
LiteLLM's map."""
import os
import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from tests.factories import ModelPriceFactory
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution


def sdk():
    """LiteLLM's SDK, imported by the first test that calls it: its import costs seconds of CPU, which the
    collection of every make test worker would pay (only the one running this module needs it). The price map
    packaged with LiteLLM (no download at import), and no `.env` read into this process."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_MODE", "PRODUCTION")
    import litellm

    return litellm


# What LiteLLM's own types make pydantic say as they are built: not this test's concern.
pytestmark = [pytest.mark.filterwarnings("ignore:.*ReadOnly.*:UserWarning"),
              pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")]

USAGE = {"prompt_tokens": 1200, "completion_tokens": 40, "total_tokens": 1240,
         "prompt_tokens_details": {"cached_tokens": 1024}, "completion_tokens_details": {"reasoning_tokens": 16}}
ASK = [{"role": "user", "content": "What is 12*7?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
# Chatter's price of gpt-4o-mini in these tests, per million tokens: not LiteLLM's ($0.15 / $0.075 / $0.60).
INPUT, CACHED, OUTPUT = Decimal("2"), Decimal("1"), Decimal("8")


@pytest.fixture
def chatter(gateway, openai_stub):
    """The gateway, its stub upstream, and Chatter's own price of gpt-4o-mini."""
    ModelPriceFactory(provider="openai", model_pattern="gpt-4o-mini", input_per_million=INPUT,
                      cached_input_per_million=CACHED, output_per_million=OUTPUT)
    return gateway


class LoggedCosts:
    """The cost LiteLLM logs for each call (`response_cost`, what its spend tracking records), through its success
    callbacks, which it runs on a thread of its own as the call returns."""

    def __init__(self) -> None:
        self.costs: list[float] = []
        self.logged = threading.Condition()

    def record(self, kwargs, completion_response, start_time, end_time) -> None:
        if kwargs.get("stream") and kwargs.get("complete_streaming_response") is None:
            return  # a stream's chunk: its last callback carries the whole response and its cost
        with self.logged:
            self.costs.append(kwargs["response_cost"])
            self.logged.notify_all()

    def wait(self, count: int) -> list[Decimal]:
        with self.logged:
            self.logged.wait_for(lambda: len(self.costs) >= count, timeout=20)
            return [Decimal(str(cost)) for cost in self.costs]


@pytest.fixture
def logged(monkeypatch) -> LoggedCosts:
    costs = LoggedCosts()
    monkeypatch.setattr(sdk(), "success_callback", [costs.record])
    return costs


def call(chatter, messages=ASK, **request):
    return sdk().completion(model="openai/gpt-4o-mini", api_base=chatter.v1, api_key=chatter.key,
                              messages=messages, num_retries=0, timeout=30, **request)


def priced(usage: dict) -> Decimal:
    cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    return ((usage["prompt_tokens"] - cached) * INPUT + cached * CACHED + usage["completion_tokens"] * OUTPUT) / 10**6


def assert_stored_as_told(response, usage: dict) -> WorkflowExecution:
    """The run whose id the response carries stored what LiteLLM was told, and LiteLLM's cost is Chatter's."""
    execution = WorkflowExecution.objects.get(pk=response.id.removeprefix("chatcmpl-"))
    (stored,) = LLMCall.objects.filter(execution=execution)
    told = response.usage
    assert (told.prompt_tokens, told.completion_tokens, told.total_tokens) == (
        execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    assert told.prompt_tokens_details.cached_tokens == stored.cached_prompt_tokens == usage.get(
        "prompt_tokens_details", {}).get("cached_tokens", 0)
    assert execution.cost == stored.cost == priced(usage).quantize(Decimal("0.00000001"))
    assert Decimal(str(sdk().completion_cost(completion_response=response))) == execution.cost
    assert_all(execution)
    return execution


def test_a_call_is_billed_as_chatter_stored_it_and_litellm_reads_chatters_cost(chatter, openai_stub, logged):
    openai_stub.reply(content="84.", usage=USAGE)

    response = call(chatter, temperature=0.2, seed=7)

    assert response.choices[0].message.content == "84."
    execution = assert_stored_as_told(response, USAGE)
    assert logged.wait(1) == [execution.cost]
    assert response.usage.completion_tokens_details.reasoning_tokens == 16
    # LiteLLM's own price of the same tokens differs: the figure above is Chatter's, read from `usage.cost`.
    assert Decimal(str(sdk().completion_cost(model="gpt-4o-mini", prompt="", completion="84."))) != \
        WorkflowExecution.objects.get().cost
    sent = openai_stub.last_request.body
    assert (sent["temperature"], sent["seed"], sent["messages"]) == (0.2, 7, ASK)
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 1 (SystemExit) on any drift


def test_a_streamed_call_ends_with_the_stored_usage(chatter, openai_stub, logged):
    openai_stub.reply(content="Twelve sevens make 84.", usage=USAGE)

    chunks = list(call(chatter, stream=True, stream_options={"include_usage": True}))
    response = sdk().stream_chunk_builder(chunks, messages=ASK)

    assert response.choices[0].message.content == "Twelve sevens make 84."
    execution = assert_stored_as_told(response, USAGE)
    assert logged.wait(1) == [execution.cost]
    assert openai_stub.last_request.body["stream"] is True
    call_command("reconcile_aggregates", stdout=StringIO())


def test_logprobs_tools_and_n_pass_through(chatter, openai_stub, logged):
    usage = {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}
    openai_stub.reply(content="It is 84.", usage=usage)
    openai_stub.reply(tool_calls=[{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}],
                      usage=usage)
    openai_stub.reply(content="Sunny in Paris.", usage=usage)
    openai_stub.reply(content="84.", more_choices=["Eighty-four."], usage=usage)

    with_logprobs = call(chatter, logprobs=True, top_logprobs=2)
    asked = call(chatter, tools=[WEATHER], tool_choice="auto")
    (tool_call,) = asked.choices[0].message.tool_calls
    answered = call(chatter, tools=[WEATHER], messages=[*ASK, asked.choices[0].message.model_dump(), {
        "role": "tool", "tool_call_id": tool_call.id, "content": "sunny"}])
    two = call(chatter, n=2)

    tokens = with_logprobs.choices[0].logprobs["content"]
    assert [entry["token"] for entry in tokens] == ["It ", "is ", "84."] and len(tokens[0]["top_logprobs"]) == 2
    assert (tool_call.id, tool_call.function.name, tool_call.function.arguments) == (
        "call_w1", "get_weather", '{"city": "Paris"}')
    assert asked.choices[0].finish_reason == "tool_calls" and answered.choices[0].message.content == "Sunny in Paris."
    assert [choice.message.content for choice in two.choices] == ["84.", "Eighty-four."]
    first, second, third, fourth = (request.body for request in openai_stub.requests)
    assert (first["logprobs"], first["top_logprobs"]) == (True, 2) and second["tools"][0]["function"]["name"] == \
        "get_weather"
    assert [m["role"] for m in third["messages"]] == ["user", "assistant", "tool"] and fourth["n"] == 2
    costs = {assert_stored_as_told(response, usage).cost for response in (with_logprobs, asked, answered, two)}
    assert set(logged.wait(4)) == costs and len(costs) == 1
    call_command("reconcile_aggregates", stdout=StringIO())


def test_embeddings_are_runs_with_the_usage_and_the_cost_litellm_logs(chatter, openai_stub, logged):
    ModelPriceFactory(provider="openai", model_pattern="text-embedding-3-small", input_per_million=INPUT,
                      output_per_million=Decimal("0"))  # LiteLLM's is $0.02
    openai_stub.reply(usage={"prompt_tokens": 4, "total_tokens": 4}, model="text-embedding-3-small")

    embedded = sdk().embedding(model="openai/text-embedding-3-small", api_base=chatter.v1, api_key=chatter.key,
                                 input=["one", "two"], num_retries=0, timeout=30)

    assert len(embedded.data) == 2 and len(embedded.data[0]["embedding"]) > 0
    execution = WorkflowExecution.objects.get()
    assert (embedded.usage.prompt_tokens, embedded.usage.total_tokens) == (
        execution.prompt_tokens, execution.total_tokens) == (4, 4)
    assert execution.cost == 4 * INPUT / 10**6 == logged.wait(1)[0]  # from the x-litellm-response-cost header
    # An embeddings response's usage carries no cost to LiteLLM: completion_cost() on it prices by LiteLLM's map.
    assert Decimal(str(sdk().completion_cost(completion_response=embedded))) == 4 * Decimal("0.02") / 10**6
    assert openai_stub.last_request.body["input"] == ["one", "two"]
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())
