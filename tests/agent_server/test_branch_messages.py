"""A registered graph's run from an earlier checkpoint of its thread (regenerate) saves every message it produced to
the thread's conversation, also one under the id of a message of the branch it left (a graph that names its
messages, as the sample `stateful` does): the messages of the thread's other runs stay as they were, and I3 holds
for both runs."""
import pytest
from langgraph_sdk import get_sync_client

from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
START = {"messages": [], "value": "init", "items": []}


def test_a_branchs_messages_are_its_own_under_the_ids_of_the_branch_it_left(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread_id = client.threads.create()["thread_id"]
    client.runs.wait(thread_id, "stateful", input=START)
    client.runs.wait(thread_id, "stateful", command={"resume": "yes"})
    before_ask = next(h for h in client.threads.get_history(thread_id, limit=50) if h["next"] == ["ask"])

    client.runs.wait(thread_id, "stateful", input=None, checkpoint_id=before_ask["checkpoint"]["checkpoint_id"])
    final = client.runs.wait(thread_id, "stateful", command={"resume": "no"})

    first, branch = WorkflowExecution.objects.order_by("created_at")
    assert [m["id"] for m in final["messages"][-2:]] == ["asked-1", "sub-1"]  # the ids the first branch used
    stored = first.conversation.messages.order_by("sequence")
    assert [(m.content, m.metadata["message_id"], m.execution_id) for m in stored] == [
        ("Hello there", "greet-1", first.pk), ("", "tool-call-1", first.pk), ("found x", "tool-result-1", first.pk),
        ("You said yes", "asked-1", first.pk), ("from the subgraph", "sub-1", first.pk),
        ("You said no", "asked-1", branch.pk), ("from the subgraph", "sub-1", branch.pk)]
    for execution in (first, branch):
        assert execution.status == "completed"
        assert_all(execution)
    assert reconcile_exit_code() == 0
