"""The SDK integration suite's own graphs (langgraph-sdk 0.4.3's sdist, registered unchanged, as the suite runs
them) through /api/v1/: each run in a conversation, every message the graph keeps in its state is one of the
conversation's, in order, an AI message with the usage of the model call that made it; every run's figures add up
(I1-I3) and the aggregates reconcile. (The suite itself: test_sdk_integration_suite.py.)"""
import httpx
import pytest
from langgraph_sdk import get_sync_client

from agent_server.assistants import RegisteredGraph
from conversations.models import Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.agent_server.test_sdk_integration_suite import sdist_unpacked
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
ROLES = {"human": "user", "ai": "assistant", "tool": "tool"}


@pytest.fixture
def suite_graph_server(shared_daphne_server):
    """A server (shared by the module's tests: tests/fixtures_server.py SharedServers) serving the suite's graphs."""
    server = shared_daphne_server(CHATTER_GRAPHS=str(sdist_unpacked() / "integration" / "langgraph.json"))
    server.langgraph_url = f"{server.base_url}/langgraph"
    return server


@pytest.mark.parametrize("graph_id", ["agent", "tools_agent", "deep_agent"])  # (factory_agent: refused, see README)
def test_a_suite_graph_through_the_rest_api_keeps_every_message_with_its_usage(suite_graph_server, alice_key,
                                                                              graph_id):
    client = get_sync_client(url=suite_graph_server.langgraph_url, api_key=alice_key)
    with httpx.Client(base_url=f"{suite_graph_server.base_url}/api/v1", timeout=60,
                      headers={"Authorization": f"Token {alice_key}"}) as api:
        conversation = api.post("/conversations/", json={"title": graph_id}).json()
        ran = api.post("/executions/", json={"graph": RegisteredGraph(graph_id).as_graph(), "mode": "sync",
                                             "input": {"message": "research v3"}, "conversation_id": conversation["id"]})
        assert ran.status_code == 201, ran.text
        if ran.json()["execution"]["status"] == "waiting":  # the streaming graph asks a person
            resumed = api.post(f"/executions/{ran.json()['execution']['id']}/resume/", json={"answer": "yes"})
            assert resumed.status_code == 200, resumed.text

    execution = WorkflowExecution.objects.get(pk=ran.json()["execution"]["id"])
    assert execution.status == "completed" and execution.llm_calls >= 1
    kept = client.threads.get_state(conversation["id"])["values"]["messages"]  # the graph's own state
    stored = list(Message.objects.filter(conversation_id=conversation["id"]).order_by("sequence"))
    assert [(m.role, m.content) for m in stored] == [(ROLES[m["type"]], m["content"]) for m in kept]
    assert len(stored) > 2 and stored[0].content == "research v3"
    calls = [c.total_tokens for c in LLMCall.objects.filter(execution=execution)]
    made = [m.total_tokens for m in stored if m.role == "assistant" and m.total_tokens]
    # Every call's tokens are on the messages: each on the one it made (a subagent's, whose reply is not one of the
    # graph's messages, rides on the last), exactly the run's.
    assert made and set(made) - set(calls) <= {made[-1]} and sum(made) == sum(calls) == execution.total_tokens
    assert_all(execution)
    assert reconcile_exit_code() == 0
