"""A hard budget over gateway calls, on the run path and the pass-through alike: a call's reservation prices every
choice it asks for (`n`); a call stopped by its budget is recorded with all the upstream reported and answered as
OpenAI's clients do not retry (429 `insufficient_quota`), whole or streamed (docs/operations/budgets.md)."""
import openai
import pytest

from tests.factories import BudgetFactory
from tests.gateway.conftest import client
from workflows.models import WorkflowExecution

ASK = [{"role": "user", "content": "Count."}]


def test_n_choices_are_each_reserved_for_and_a_budget_without_room_for_them_refuses_the_call(gateway_api, alice):
    BudgetFactory(owner=alice, period="total", limit_tokens=200, mode="hard")

    refused = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": ASK, "n": 128,
                                                        "max_tokens": 20}, format="json")
    answered = gateway_api.post("/v1/chat/completions", {"model": "local-echo-1", "messages": ASK, "n": 3,
                                                         "max_tokens": 20}, format="json")

    error = refused.json()["error"]
    assert refused.status_code == 429 and (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert answered.status_code == 200, answered.json()
    run = WorkflowExecution.objects.get()  # the refused call left no run
    assert len(answered.json()["choices"]) == 3 and run.budget_holds[0]["tokens"] >= 3 * 20


def test_the_pass_through_reserves_for_n_choices_too(gateway, openai_stub, alice):
    BudgetFactory(owner=alice, period="total", limit_tokens=200, mode="hard")

    with pytest.raises(openai.RateLimitError) as refused:
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=ASK, n=128, max_tokens=20)

    assert refused.value.code == "budget_exceeded" and not openai_stub.requests
    assert not WorkflowExecution.objects.exists()
