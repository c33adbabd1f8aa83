"""The `openai` provider against a real HTTP server speaking the Chat Completions API (tests/openai_stub.py).

Prices are the seeded gpt-4o-mini row: $0.15 input, $0.075 cached input, $0.60 output per million tokens.
"""
import math
from decimal import Decimal

import pytest
from langchain_core.messages import HumanMessage

from conversations.models import Message
from engine.providers import chat_model
from engine.usage import usage_from_message
from tests.invariants import assert_all
from workflows.models import LLMCall, NodeExecution, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run, execution_stream

pytestmark = pytest.mark.django_db

OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
USAGE = {
    "prompt_tokens": 1000,
    "completion_tokens": 200,
    "total_tokens": 1200,
    "prompt_tokens_details": {"cached_tokens": 400},
    "completion_tokens_details": {"reasoning_tokens": 50},
}
# (1000 - 400) * 0.15 + 400 * 0.075 + 200 * 0.60 = 90 + 30 + 120 micro-dollars
USAGE_COST = Decimal("0.00024000")


@pytest.fixture
def stub(openai_stub, settings):
    settings.OPENAI_BASE_URL = openai_stub.base_url
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    return openai_stub


def chat(owner, message="What is 12*7?", **config):
    execution = execution_create(ChatRequest(owner=owner, message=message, config={**OPENAI, **config}))
    return execution_run(execution_id=execution.pk)


def test_a_sync_turn_records_exact_tokens_sub_buckets_and_cost(alice, stub):
    stub.reply(content="Hello there, Alice.", usage=USAGE, model="gpt-4o-mini-2024-07-18")
    execution = chat(alice, message="Say hello")

    request = stub.requests[0].body
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["model"] == "gpt-4o-mini"
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.content == "Hello there, Alice."
    assert (reply.prompt_tokens, reply.completion_tokens, reply.total_tokens) == (1000, 200, 1200)
    assert (reply.cached_prompt_tokens, reply.reasoning_tokens) == (400, 50)
    assert reply.cost == USAGE_COST
    assert reply.usage_raw == USAGE
    assert (reply.provider_used, reply.model_used, reply.usage_estimated) == ("openai", "gpt-4o-mini-2024-07-18", False)
    assert reply.finish_reason == "stop"
    assert (execution.total_tokens, execution.cost) == (1200, USAGE_COST)
    assert_all(execution)


def test_a_streamed_turn_records_the_same_numbers_and_streams_the_text(alice, stub, transactional_db):
    stub.reply(content="Streaming works fine.", usage=USAGE)
    execution = execution_create(ChatRequest(owner=alice, message="Say hi", mode="stream", config=OPENAI))
    envelopes = list(execution_stream(execution_id=execution.pk))

    assert "".join(e["data"]["text"] for e in envelopes if e["event"] == "token") == "Streaming works fine."
    usage_event = next(e for e in envelopes if e["event"] == "token_usage")["data"]
    tokens = [e["data"] for e in envelopes if e["event"] == "token"]
    assert usage_event.pop("message_id") == tokens[0]["message_id"] == tokens[-1]["message_id"]  # the reply's id
    assert usage_event == {
        "node_id": "model", "provider": "openai", "model": "gpt-4o-mini", "prompt_tokens": 1000,
        "completion_tokens": 200, "total_tokens": 1200, "cached_prompt_tokens": 400, "reasoning_tokens": 50,
        "cost": "0.00024000", "estimated": False,
    }
    execution.refresh_from_db()
    assert (execution.total_tokens, execution.cost) == (1200, USAGE_COST)
    assert_all(execution)


def test_the_blocking_api_response_is_normalized_the_same_way(stub, settings):
    stub.reply(content="Blocking reply.", usage=USAGE)
    model = chat_model(provider="openai", model="gpt-4o-mini", temperature=None, max_tokens=None, timeout_s=10)
    message = model.invoke([HumanMessage("hi")])
    assert stub.requests[0].body.get("stream") in (None, False)
    usage = usage_from_message(message)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 200, 1200)
    assert (usage.cached_prompt_tokens, usage.reasoning_tokens, usage.estimated) == (400, 50, False)
    assert usage.raw["prompt_tokens_details"] == {"cached_tokens": 400}


def test_model_tools_model_sums_both_calls_exactly(alice, stub):
    first = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    second = {"prompt_tokens": 180, "completion_tokens": 20, "total_tokens": 200,
              "prompt_tokens_details": {"cached_tokens": 100}}
    stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}}], usage=first)
    stub.reply(content="12*7 is 84.", usage=second)
    execution = chat(alice)

    assert execution.status == "completed"
    assert (execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) == (300, 50, 350)
    # first: 120*.15 + 30*.6 = 36; second: 80*.15 + 100*.075 + 20*.6 = 31.5 (micro-dollars)
    assert execution.cost == Decimal("0.00006750")
    assert (execution.llm_calls, execution.tool_calls) == (2, 1)
    model_nodes = NodeExecution.objects.filter(execution=execution, node_type="model").order_by("index")
    assert [n.total_tokens for n in model_nodes] == [150, 200]
    assert [n.cost for n in model_nodes] == [Decimal("0.00003600"), Decimal("0.00003150")]
    # The tool result went back to the model.
    tool_message = stub.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == "84"
    reply = Message.objects.get(execution=execution, role="assistant")
    assert (reply.total_tokens, reply.cached_prompt_tokens, reply.cost) == (350, 100, Decimal("0.00006750"))
    assert_all(execution)


def test_missing_usage_is_estimated_and_flagged(alice, stub):
    stub.reply(content="An answer without usage.", usage=None)
    execution = chat(alice, message="Say hi")

    call = LLMCall.objects.get(execution=execution)
    # The offline estimator: ceil(chars / 4) per message plus 4 tokens of framing for the prompt.
    assert call.prompt_tokens == math.ceil(len("Say hi") / 4) + 4
    assert call.completion_tokens == math.ceil(len("An answer without usage.") / 4)
    assert call.estimated is True
    assert call.cost == ((call.prompt_tokens * Decimal("0.15") + call.completion_tokens * Decimal("0.6"))
                         / 10**6).quantize(Decimal("0.00000001"))
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.usage_estimated is True and reply.total_tokens == call.total_tokens
    assert_all(execution)


def test_a_provider_reported_cost_wins_over_the_price_table(alice, stub):
    stub.reply(content="ok", usage={**USAGE, "cost": 0.0123})
    execution = chat(alice, message="hi")
    assert execution.cost == Decimal("0.01230000")
    assert LLMCall.objects.get(execution=execution).provider_cost is True


def test_a_provider_error_fails_the_run_and_keeps_earlier_usage(alice, stub):
    stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "2+2"}}],
               usage={"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110})
    stub.reply(status=500, error_body={"error": {"message": "upstream exploded", "type": "server_error"}})
    execution = chat(alice, message="What is 2+2?")

    assert (execution.status, execution.error_type) == ("failed", "provider_error")
    assert "upstream exploded" in execution.error_message
    assert (execution.total_tokens, execution.llm_calls, execution.tool_calls) == (110, 1, 1)
    assert execution.cost == Decimal("0.00002100")  # 100 * .15 + 10 * .6
    failed = NodeExecution.objects.filter(execution=execution, status="failed").get()
    assert failed.node_type == "model" and failed.total_tokens == 0
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.total_tokens == 110 and "upstream exploded" in reply.error_message
    assert execution.events.order_by("-seq").first().event == "workflow_failed"
    assert_all(execution)


def test_an_unpriced_openai_model_is_refused_before_any_row(alice, stub):
    from core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="unknown model"):
        execution_create(ChatRequest(owner=alice, message="hi", config={"provider": "openai", "model": "mystery-9"}))
    assert WorkflowExecution.objects.count() == 0 and stub.requests == []
