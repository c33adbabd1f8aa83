"""LangGraph's official JavaScript SDK (`@langchain/langgraph-sdk`, tests/js/langgraph_sdk.mjs) against a real
daphne server serving the sample Python graphs: assistants with versions, a graph's own state streamed (its nodes,
its stream writer), changed by hand and resumed past its question, its history, threads found by graph, the store,
and a graph calling a model through a pause, with exact tokens and cost on the run and its messages."""
from decimal import Decimal

import pytest

from tests.agent_server.conftest import reconcile_exit_code
from tests.factories import ApiTokenFactory
from tests.invariants import assert_all
from tests.js_clients import run_script
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
REVIEW = [{"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
          {"prompt_tokens": 70, "completion_tokens": 5, "total_tokens": 75}]


def test_langgraphs_js_sdk_runs_graphs_as_they_are_with_exact_accounting(graph_server, openai_stub, alice,
                                                                         node_modules):
    openai_stub.reply(content="12*7 = 74", usage=REVIEW[0]).reply(content="12*7 = 84", usage=REVIEW[1])

    made = run_script("langgraph_sdk.mjs", CHATTER_LANGGRAPH_URL=graph_server.langgraph_url,
                      CHATTER_KEY=ApiTokenFactory(user=alice).key)

    review = WorkflowExecution.objects.get(pk=made["review_run"])
    assert str(review.conversation_id) == made["review_thread"] and review.status == "completed"
    calls = LLMCall.objects.filter(execution=review).order_by("created_at")
    assert [c.total_tokens for c in calls] == [48, 75] and review.total_tokens == 123
    assert review.cost == sum(c.cost for c in calls) == Decimal("0.00001080") + Decimal("0.00001350")
    replies = review.conversation.messages.filter(role="assistant").order_by("sequence")
    assert [(m.content, m.total_tokens) for m in replies] == [("12*7 = 74", 48), ("12*7 = 84", 75)]
    stateful = WorkflowExecution.objects.get(conversation_id=made["stateful_thread"])
    assert stateful.status == "completed" and stateful.total_tokens == 0
    assert [m.content for m in stateful.conversation.messages.order_by("sequence")] == [
        "Hello there", "", "found x", "You said yes", "from the subgraph"]
    for execution in (review, stateful):
        assert_all(execution)
    assert reconcile_exit_code() == 0
