"""A thread's state and history (agent_server.state), over the official langgraph-sdk against a real daphne server:
a Chatter graph with a human_input node keeps its state in the thread's checkpoints, as a registered graph does:
get_state (now, at a checkpoint), get_history (limit, before, metadata), update_state (a new checkpoint), resume,
and a run from one of the thread's checkpoints (a branch in the thread); a conversation never run as a thread has
no graph state."""
import pytest
from asgiref.sync import sync_to_async
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from agent_server.models import AgentRun
from conversations.models import Conversation
from tests.agent_server.conftest import reconcile_exit_code
from tests.api.test_human_input import ASKING
from tests.invariants import assert_all
from workflows.models import WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now
from workflows.services.templates import template_create

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}


@pytest.fixture
def asking(alice):
    return template_create(owner=alice, key="asking", name="Asks how many", graph=ASKING)


def test_the_state_and_history_of_a_paused_then_answered_thread(server, alice_key, bob_key, asking):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    tid = thread["thread_id"]
    client.runs.wait(tid, "asking", input=TURN)

    paused = client.threads.get_state(tid)
    history = client.threads.get_history(tid, limit=100)

    run_id = str(WorkflowExecution.objects.get(conversation_id=tid).pk)
    assert paused["next"] == ["ask"] and paused["interrupts"][0]["value"]["prompt"] == "How many?"
    assert history[0]["checkpoint"] == paused["checkpoint"] and history[0]["next"] == ["ask"]
    assert all(h["checkpoint"]["thread_id"] == tid and h["metadata"]["run_id"] == run_id for h in history)
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert len(set(ids)) == len(ids) >= 3 and ids == sorted(ids, reverse=True)  # newest first
    assert [h["parent_checkpoint"]["checkpoint_id"] for h in history[:-1]] == ids[1:]  # each one's parent: the next
    assert history[-1]["parent_checkpoint"] is None and history[-1]["metadata"]["source"] == "input"
    assert [m["content"] for m in paused["values"]["messages"]][0] == "What is 12*7?"
    older = client.threads.get_state(tid, checkpoint_id=ids[1])
    assert older["checkpoint"]["checkpoint_id"] == ids[1] and older["next"] == history[1]["next"]
    assert client.threads.get_state(tid, checkpoint={"thread_id": tid, "checkpoint_ns": "",
                                                     "checkpoint_id": ids[1]})["values"] == older["values"]
    assert [h["checkpoint"] for h in client.threads.get_history(tid, limit=1)] == [history[0]["checkpoint"]]
    assert [h["checkpoint"]["checkpoint_id"] for h in client.threads.get_history(
        tid, before={"checkpoint_id": ids[0]}, limit=100)] == ids[1:]
    inputs = client.threads.get_history(tid, metadata={"source": "input"}, limit=100)
    assert [h["checkpoint"]["checkpoint_id"] for h in inputs] == [ids[-1]]

    client.runs.wait(tid, "asking", command={"resume": 4})
    done = client.threads.get_state(tid)
    after = client.threads.get_history(tid, limit=100)

    assert done["next"] == [] and done["interrupts"] == [] and len(after) > len(history)
    assert [m["type"] for m in done["values"]["messages"]] == ["human", "ai", "ai"]  # the graph's, with usage
    assert done["values"]["messages"][-1]["usage_metadata"]["total_tokens"] > 0
    assert after[0]["values"] == done["values"] and after[0]["checkpoint"] == done["checkpoint"]
    assert {h["checkpoint"]["checkpoint_id"] for h in history} <= {h["checkpoint"]["checkpoint_id"] for h in after}

    bob = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    with pytest.raises(NotFoundError):
        bob.threads.get_state(tid)
    with pytest.raises(NotFoundError):
        bob.threads.get_history(tid)
    with pytest.raises(NotFoundError):
        client.threads.get_state(tid, checkpoint_id="1f0-not-a-checkpoint")


async def test_update_state_makes_a_checkpoint_and_a_run_goes_on_from_it_in_the_thread(server, alice_key, asking):
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()
    tid = thread["thread_id"]
    await client.runs.wait(tid, "asking", input=TURN)
    await client.runs.wait(tid, "asking", command={"resume": 2})
    before = await sync_to_async(Conversation.objects.get)(pk=tid)

    updated = await client.threads.update_state(tid, {"variables": {"count": 9}}, as_node="ask")
    state = await client.threads.get_state(tid)
    fork = await client.runs.wait(tid, "asking", checkpoint_id=updated["checkpoint"]["checkpoint_id"],
                                  metadata={"why": "what if"})

    assert state["checkpoint"] == updated["checkpoint"] and state["next"] == ["second"]
    assert [m["type"] for m in state["values"]["messages"]] == ["human", "ai", "ai"]  # the graph's, as it was
    at_update = await client.threads.get_state(tid, checkpoint_id=updated["checkpoint"]["checkpoint_id"])
    assert at_update["values"]["variables"] == {"count": 9} and at_update["metadata"]["source"] == "update"
    branch = await sync_to_async(WorkflowExecution.objects.filter(conversation_id=tid).order_by("created_at").last)()
    assert branch.status == "completed" and branch.llm_calls == 1 and not branch.forked_from_checkpoint
    assert branch.input_data["checkpoint_id"] == updated["checkpoint"]["checkpoint_id"]
    agent_run = await sync_to_async(AgentRun.objects.get)(execution_id=branch.pk)  # written with the run, as any
    assert (agent_run.assistant_id, agent_run.metadata) == ("asking", {"why": "what if"})
    assert branch.output_data["variables"] == {"count": 9}
    assert fork["messages"][-1]["usage_metadata"]["total_tokens"] == branch.total_tokens > 0
    assert len(fork["messages"]) == 4  # the second model's answer again, on top of the updated state
    after = await sync_to_async(Conversation.objects.get)(pk=tid)
    assert (after.message_count, after.total_tokens) == (before.message_count + 1,
                                                         before.total_tokens + branch.total_tokens)
    for execution in await sync_to_async(list)(WorkflowExecution.objects.filter(conversation_id=tid)):
        await sync_to_async(assert_all)(execution)
    assert await sync_to_async(reconcile_exit_code)() == 0


def test_a_conversation_never_run_as_a_thread_has_no_graph_state(server, alice, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    turn = execution_run_now(ChatRequest(owner=alice, message="What is 12*7?"))  # as /api/v1/chat/ runs it
    thread = {"thread_id": str(turn.conversation_id)}

    state = client.threads.get_state(thread["thread_id"])

    assert state["checkpoint"]["checkpoint_id"] is None and [m["type"] for m in state["values"]["messages"]] == [
        "human", "ai"]
    assert client.threads.get_history(thread["thread_id"]) == [state]
    with pytest.raises(ConflictError):
        client.threads.update_state(thread["thread_id"], {"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(UnprocessableEntityError):
        client.threads.create(supersteps=[{"updates": [{"values": {}, "as_node": "model"}]}])


def test_update_state_while_a_run_waits_then_resume_goes_on_from_the_update(server, alice_key, asking):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    client.runs.wait(tid, "asking", input=TURN)

    updated = client.threads.update_state(tid, {"variables": {"note": "edited"}})
    state = client.threads.get_state(tid)
    values = client.runs.wait(tid, "asking", command={"resume": 4})

    assert state["checkpoint"] == updated["checkpoint"] and state["next"] == ["ask"]
    execution = WorkflowExecution.objects.get(conversation_id=tid)
    assert "__interrupt__" not in values and execution.status == "completed"
    assert execution.output_data["variables"] == {"note": "edited", "count": 4} and execution.llm_calls == 2
    assert_all(execution)
    assert reconcile_exit_code() == 0
