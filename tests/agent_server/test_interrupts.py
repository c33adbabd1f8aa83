"""Interrupts and Command(resume=…) over the official langgraph-sdk against a real daphne server: a run whose graph
pauses (interrupt() in a Python graph, a human_input node of a template) ends "interrupted" with `__interrupt__`,
its thread is "interrupted" with the question in its state, and a run with command={"resume": …} goes on with the
same run, through the same resume path, with exact accounting across the pause."""
from decimal import Decimal

import httpx
import pytest
from asgiref.sync import sync_to_async
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from conversations.models import Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.api.test_human_input import ASKING
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution
from workflows.services.templates import template_create

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
DRAFT = {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
FINAL = {"prompt_tokens": 70, "completion_tokens": 5, "total_tokens": 75}


def script_review(stub) -> None:
    stub.reply(content="12*7 = 74", model="gpt-4o-mini", usage=DRAFT)
    stub.reply(content="12*7 = 84", model="gpt-4o-mini", usage=FINAL)


def test_interrupt_in_a_python_graph_pauses_the_run_and_resume_goes_on_with_it(graph_server, openai_stub,
                                                                                alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_review(openai_stub)
    thread = client.threads.create()

    paused = client.runs.wait(thread["thread_id"], "review_agent", input=TURN)

    interrupt = paused["__interrupt__"][0]
    assert interrupt["value"] == {"question": "Is the draft right?", "draft": "12*7 = 74"}
    run = client.runs.list(thread["thread_id"])[0]
    assert run["status"] == "interrupted"
    assert client.threads.get(thread["thread_id"])["status"] == "interrupted"
    assert client.threads.get(thread["thread_id"])["interrupts"]["__root__"][0]["id"] == interrupt["id"]
    state = client.threads.get_state(thread["thread_id"])
    assert state["interrupts"][0]["id"] == interrupt["id"] and state["next"] == ["review"]
    assert state["tasks"][0]["interrupts"][0]["value"]["draft"] == "12*7 = 74"
    assert state["checkpoint"]["thread_id"] == thread["thread_id"] and state["checkpoint"]["checkpoint_id"]
    # The graph's own state (it runs as it is, not inside a node of Chatter's).
    assert [m["content"] for m in state["values"]["messages"]] == ["What is 12*7?", "12*7 = 74"]
    execution = WorkflowExecution.objects.get(pk=run["run_id"])
    assert execution.status == "waiting" and execution.total_tokens == 48 and execution.llm_calls == 1

    assert "__interrupt__" in client.runs.join(thread["thread_id"], run["run_id"])  # joining a paused run returns
    joined = list(client.runs.join_stream(thread["thread_id"], run["run_id"]))  # and its stream ends at the question
    assert joined[-1].event == "end" and joined[-2].data["__interrupt__"][0]["id"] == interrupt["id"]
    assert [t["thread_id"] for t in client.threads.search(status="interrupted")] == [thread["thread_id"]]
    assert client.threads.search(status="busy") == []

    with pytest.raises(ConflictError):  # with reject, a new turn waits for the answer
        client.runs.create(thread["thread_id"], "review_agent", input=TURN, multitask_strategy="reject")
    values = client.runs.wait(thread["thread_id"], "review_agent", command={"resume": "no, it is 84"})

    execution.refresh_from_db()
    assert values["messages"][-1]["content"] == "12*7 = 84" and "__interrupt__" not in values
    assert execution.status == "completed" and [r["run_id"] for r in client.runs.list(thread["thread_id"])] == [
        run["run_id"]]  # the same run went on
    assert execution.total_tokens == 48 + 75 and execution.llm_calls == 2
    assert execution.cost == Decimal("0.00001080") + Decimal("0.00001350")  # 0.15 in, 0.60 out per million
    calls = list(LLMCall.objects.filter(execution=execution).order_by("created_at"))
    assert [c.total_tokens for c in calls] == [48, 75]  # the draft was not asked again
    assert "Reviewer: no, it is 84" in openai_stub.last_request.body["messages"][-1]["content"]
    assert client.threads.get(thread["thread_id"])["status"] == "idle"
    # Both replies are in the thread, each with its own call's usage (the draft's, from before the pause, too).
    replies = Message.objects.filter(execution=execution, role="assistant").order_by("sequence")
    assert [(m.content, m.total_tokens) for m in replies] == [("12*7 = 74", 48), ("12*7 = 84", 75)]
    assert sum(m.cost for m in replies) == execution.cost
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    assert AuditEvent.objects.filter(action="execution.resumed", target_id=str(execution.pk)).exists()
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_resume_after_the_waiting_run_was_cancelled_answers_the_question_in_a_new_run(graph_server, alice_key):
    """A registered graph's question stays in its thread's state when the run waiting on it is cancelled (the stock
    server's run had ended at its interrupt()): Command(resume=…) then answers it in a new run that goes on from that
    checkpoint, not from the start; with nothing left to answer, a resume is a 409 again."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    asked = client.runs.wait(thread, "stateful", input={"messages": [], "value": "v", "items": []})
    waiting = client.runs.list(thread)[0]["run_id"]

    client.runs.cancel(thread, waiting, wait=True)
    cancelled = client.threads.get(thread)  # its state still asks, as the stock server's thread after interrupt()
    values = client.runs.wait(thread, "stateful", command={"resume": "yes"})

    assert cancelled["status"] == "interrupted"
    assert cancelled["interrupts"]["__root__"][0]["id"] == asked["__interrupt__"][0]["id"]

    assert asked["__interrupt__"] and client.runs.get(thread, waiting)["status"] == "interrupted"
    assert values["items"] == ["greeted", "tool", "asked"]  # greet and use_tool did not run again
    assert [m["content"] for m in values["messages"]][-2:] == ["You said yes", "from the subgraph"]
    assert [r["status"] for r in client.runs.list(thread)] == ["success", "interrupted"]
    assert client.threads.get_state(thread)["next"] == [] and client.threads.get(thread)["status"] == "idle"
    with pytest.raises(httpx.HTTPStatusError) as refused:  # runs.wait raises httpx's own error, not the SDK's
        client.runs.wait(thread, "stateful", command={"resume": "again"})
    assert refused.value.response.status_code == 409


async def test_a_human_input_node_streams_its_interrupt_and_a_streamed_resume_finishes_the_run(server, alice,
                                                                                               alice_key):
    await sync_to_async(template_create)(owner=alice, key="asking", name="Asks how many", graph=ASKING)
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()

    parts = [part async for part in client.runs.stream(thread["thread_id"], "asking", input=TURN,
                                                       stream_mode=["values", "updates"])]

    updates = [part.data for part in parts if part.event == "updates" and "__interrupt__" in part.data]
    interrupt = updates[0]["__interrupt__"][0]
    assert interrupt["value"]["prompt"] == "How many?" and interrupt["response_schema"]["maximum"] == 10
    assert parts[-1].event == "end" and "__interrupt__" in [p for p in parts if p.event == "values"][-1].data
    assert (await client.threads.get(thread["thread_id"]))["status"] == "interrupted"
    state = await client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["ask"] and state["tasks"][0]["name"] == "ask"
    assert state["tasks"][0]["interrupts"][0]["id"] == interrupt["id"]

    with pytest.raises(httpx.HTTPStatusError) as refused:  # checked against the question's schema: nothing written
        await client.runs.wait(thread["thread_id"], "asking", command={"resume": 11})
    with pytest.raises(httpx.HTTPStatusError) as no_goto:
        await client.runs.wait(thread["thread_id"], "asking", command={"goto": "second"})
    assert refused.value.response.status_code == no_goto.value.response.status_code == 422
    assert "maximum of 10" in refused.value.response.text
    resumed = [part async for part in client.runs.stream(thread["thread_id"], "asking",
                                                         command={"resume": {interrupt["id"]: 3}},
                                                         stream_mode=["values", "updates"])]

    execution = await sync_to_async(WorkflowExecution.objects.get)(conversation_id=thread["thread_id"])
    assert resumed[0].event == "metadata" and resumed[0].data["run_id"] == str(execution.pk)
    assert resumed[-1].event == "end" and execution.status == "completed"
    assert execution.output_data["variables"] == {"count": 3} and execution.llm_calls == 2
    assert {node for part in resumed if part.event == "updates" for node in part.data} >= {"ask", "second"}
    joined = await client.runs.join(thread["thread_id"], str(execution.pk))
    assert sum(m["usage_metadata"]["total_tokens"] for m in joined["messages"] if m["type"] == "ai") == (
        execution.total_tokens)  # each answer of the graph's state with its call's usage
    assert (await client.threads.get(thread["thread_id"]))["status"] == "idle"
    await sync_to_async(assert_all)(execution)
    assert await sync_to_async(reconcile_exit_code)() == 0


def test_resume_after_a_templates_waiting_run_was_cancelled_answers_its_question_in_a_new_run(server, alice,
                                                                                              alice_key):
    """A template's question (its human_input node) stays in its thread's state when the run waiting on it is
    cancelled, as a registered graph's does: Command(resume=…) answers it in a new run that goes on from there (the
    model before the question does not run again), the answer checked against the question's schema first."""
    template_create(owner=alice, key="asking", name="Asks how many", graph=ASKING)
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "asking", input=TURN)
    waiting = client.runs.list(thread)[0]["run_id"]
    client.runs.cancel(thread, waiting, wait=True)
    cancelled = client.threads.get(thread)  # its state still asks, as the stock server's thread after interrupt()
    asked = client.threads.get_state(thread)["interrupts"]
    search = {status: [t["thread_id"] for t in client.threads.search(status=status)] for status in (
        "interrupted", "idle")}

    with pytest.raises(httpx.HTTPStatusError) as refused:  # checked against the question's schema: nothing written
        client.runs.wait(thread, "asking", command={"resume": 11})
    values = client.runs.wait(thread, "asking", command={"resume": 3})

    assert cancelled["status"] == "interrupted" and search == {"interrupted": [thread], "idle": []}
    assert cancelled["interrupts"] == {"ask": asked} and asked[0]["value"]["prompt"] == "How many?"
    assert refused.value.response.status_code == 422 and "maximum of 10" in refused.value.response.text
    runs = client.runs.list(thread)
    assert [r["status"] for r in runs] == ["success", "interrupted"] and runs[1]["run_id"] == waiting
    answered = WorkflowExecution.objects.get(pk=runs[0]["run_id"])
    assert answered.output_data["variables"] == {"count": 3} and answered.llm_calls == 1  # only the second model
    assert values["messages"][0]["content"] == "What is 12*7?" and values["messages"][-1]["type"] == "ai"
    assert client.threads.get_state(thread)["next"] == [] and client.threads.get(thread)["status"] == "idle"
    with pytest.raises(httpx.HTTPStatusError) as nothing_asked:
        client.runs.wait(thread, "asking", command={"resume": 4})
    assert nothing_asked.value.response.status_code == 409
    assert_all(answered)
    assert reconcile_exit_code() == 0


def test_resume_without_a_waiting_run_is_refused(server, alice_key, bob_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "universal_chat", input=TURN)

    with pytest.raises(ConflictError):
        client.runs.create(thread["thread_id"], "universal_chat", command={"resume": "yes"})
    with pytest.raises(UnprocessableEntityError):
        client.runs.create(None, "universal_chat", command={"resume": "yes"})
    with pytest.raises(UnprocessableEntityError):  # a breakpoint at a node the graph does not have
        client.runs.create(thread["thread_id"], "universal_chat", input=TURN, interrupt_before=["nowhere"])
    bob = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    with pytest.raises(NotFoundError):  # another user's thread, waiting or not, is not found
        bob.runs.create(thread["thread_id"], "universal_chat", command={"resume": "yes"})

    assert WorkflowExecution.objects.count() == 1
