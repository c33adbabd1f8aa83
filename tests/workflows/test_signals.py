"""The domain signals workflows sends upward (analytics answers them): what each carries."""
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from conversations.models import Message
from tests.factories import ModelPriceFactory
from workflows.models import LLMCall, WorkflowExecution
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import execution_cancel, execution_create, execution_run
from workflows.signals import execution_finished, usage_repriced

pytestmark = pytest.mark.django_db
CALL_KEYS = {"provider", "model", "llm_calls", "prompt_tokens", "completion_tokens", "total_tokens",
             "cached_prompt_tokens", "reasoning_tokens", "cost"}


@pytest.fixture
def heard():
    news = []

    def listen(signal, **kwargs):
        news.append((signal, kwargs))

    for signal in (execution_finished, usage_repriced):
        signal.connect(listen, dispatch_uid="test_listen")
    yield news
    for signal in (execution_finished, usage_repriced):
        signal.disconnect(dispatch_uid="test_listen")


def test_a_run_ending_carries_its_messages_and_its_calls_per_model(alice, heard):
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="What is 12*7?")).pk)

    [(signal, news)] = heard
    assert signal is execution_finished and news["sender"] is WorkflowExecution
    assert news["execution"].pk == execution.pk and news["execution"].status == "completed"
    assert [(m.role, m.pk) for m in news["messages"]] == list(
        Message.objects.filter(execution=execution).order_by("sequence").values_list("role", "pk"))
    assert [m.role for m in news["messages"]] == ["user", "assistant"]
    [call] = news["calls"]
    assert set(call) == CALL_KEYS
    ledger = LLMCall.objects.filter(execution=execution)
    assert (call["provider"], call["model"], call["llm_calls"]) == ("local", "local-echo-1", ledger.count())
    for name in CALL_KEYS - {"provider", "model", "llm_calls"}:
        assert call[name] == sum(getattr(row, name) for row in ledger), name


def test_a_run_cancelled_before_it_started_has_no_calls(alice, heard):
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))
    execution_cancel(execution=execution, actor=alice)

    [(_, news)] = heard
    assert news["calls"] == [] and [m.role for m in news["messages"]] == ["user", "assistant"]


def test_a_run_without_a_conversation_has_no_messages(alice, heard):
    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}
    execution_run(execution_id=execution_create(ExecutionRequest(owner=alice, graph=graph, message="hi")).pk)

    [(_, news)] = heard
    assert news["messages"] == [] and len(news["calls"]) == 1


def test_repricing_an_ended_run_carries_the_change_per_call(alice, heard):
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello")).pk)
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=10,
                      output_per_million=20, effective_from=timezone.now() - timedelta(days=1))
    before = execution.cost

    call_command("recompute_costs", stdout=StringIO())

    [(signal, news)] = heard[1:]
    execution.refresh_from_db()
    assert signal is usage_repriced and news["execution"].pk == execution.pk
    [call] = news["calls"]
    assert set(call) == {"provider", "model", "cost"} and (call["provider"], call["model"]) == ("local", "local-echo-1")
    assert call["cost"] == execution.cost - before and call["cost"] > Decimal("0")
