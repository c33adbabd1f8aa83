"""multitask_strategy="rollback" and on_disconnect="cancel" over the official langgraph-sdk against a real daphne
server. A rolled-back run is cancelled, its messages leave the thread (the conversation's totals follow, through
message_delete's receivers) and it leaves the thread's runs; what it spent stays on the books (the run row, its
LLM calls), with an audit event of what was rolled back: reconcile_aggregates still finds zero drift."""
import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Sum
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import NotFoundError

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from conversations.models import Conversation, Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.agent_server.test_python_graphs import script_turn
from tests.invariants import assert_all, assert_i1, assert_i2, assert_seq_gapless
from workflows.cancels import CANCEL_POLL_S
from workflows.models import LLMCall, NodeExecution, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
SLOW = {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}


def script_held_call(openai_stub) -> None:
    """A run's model call, held at the stub until released_once_cancel_asked. It answers with a tool call, so the run
    has a node boundary after it (its `tools` node), where it finds the cancel asked meanwhile whatever the timing: a
    graph that ended at the call's answer would see it only if an idle check (every half second) fell in the call."""
    openai_stub.reply(tool_calls=[{"name": "multiply", "arguments": {"a": 12, "b": 7}}], usage=SLOW, hold=True)


def model_call_started(part) -> bool:
    """The stream's part that says the graph has begun: its first state (its input), before its `agent` node,
    whose model call (held at the stub) comes next."""
    return part.event == "values"


def call_reached(openai_stub, timeout_s: float = 10.0) -> None:
    """Wait until the run's model call has reached the stub (which holds it until `released_once_cancel_asked`). A
    reader that leaves before that could stop the run before its call is made (with nothing to account); one that
    leaves after it stops the run once the call is answered, and that call is accounted all the same."""
    deadline = time.monotonic() + timeout_s
    while not openai_stub.requests:
        assert time.monotonic() < deadline, "the run's model call never reached the stub"
        time.sleep(0.01)


def released_once_cancel_asked(openai_stub, execution_id, timeout_s: float = 30.0) -> None:
    """Wait until the run's row shows its cancel asked, then answer its model call, held at the stub until now: the
    cancel (or rollback, or disconnect) surely landed while the call was under way, however loaded the machine.
    A run in another process (a worker) reads its row at most every CANCEL_POLL_S: once that long has passed since
    the cancel was written, its next check reads it (or one since the cancel did), so the answer comes after that."""
    deadline = time.monotonic() + timeout_s
    while not WorkflowExecution.objects.filter(pk=execution_id, cancel_requested=True).exists():
        assert time.monotonic() < deadline, f"run {execution_id} was never asked to stop"
        time.sleep(0.02)
    time.sleep(CANCEL_POLL_S)  # (a lower bound, not a race: any longer is as good)
    openai_stub.release()


def ended(execution_id, timeout_s: float = 20.0) -> WorkflowExecution:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        execution = WorkflowExecution.objects.get(pk=execution_id)
        if execution.is_terminal:
            return execution
        time.sleep(0.1)
    raise AssertionError(f"run {execution_id} did not end")


def assert_rolled_back_run_kept(execution) -> None:
    """The invariants of a rolled-back run: its nodes add up to it (I3), its thread's totals are its messages'
    (I1: it has none left), the analytics count it (I2), its log is whole (I6). Its reply is gone with the thread's
    messages, so I3's "the reply carries the run's figures" has no reply to hold for."""
    nodes = NodeExecution.objects.filter(execution=execution).aggregate(
        **{name: Sum(name) for name in ("total_tokens", "cost", "llm_calls")})
    assert (nodes["total_tokens"], nodes["cost"], nodes["llm_calls"]) == (
        execution.total_tokens, execution.cost, execution.llm_calls)
    assert_i1(execution.conversation)
    assert_i2()
    assert_seq_gapless(execution)


def test_rollback_of_a_pending_run_takes_it_out_of_the_thread(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    tid = thread["thread_id"]
    first = client.runs.create(tid, "universal_chat", input=TURN)  # pending: no worker runs it

    values = client.runs.wait(tid, "universal_chat", input={"messages": [{"role": "user", "content": "Hi again"}]},
                              multitask_strategy="rollback")

    rolled_back = WorkflowExecution.objects.get(pk=first["run_id"])
    second = WorkflowExecution.objects.exclude(pk=rolled_back.pk).get(conversation_id=tid)
    assert rolled_back.status == "cancelled" and second.status == "completed"
    assert [m["content"] for m in values["messages"] if m["type"] == "human"] == ["Hi again"]
    assert [r["run_id"] for r in client.runs.list(tid)] == [str(second.pk)]
    with pytest.raises(NotFoundError):
        client.runs.get(tid, first["run_id"])
    assert not Message.objects.filter(execution=rolled_back).exists()
    conversation = Conversation.objects.get(pk=tid)
    assert conversation.message_count == 2 and conversation.total_tokens == second.total_tokens
    assert conversation.total_cost == second.cost
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    audit = AuditEvent.objects.get(action="execution.rolled_back", target_id=str(rolled_back.pk))
    assert [m["role"] for m in audit.data["messages_removed"]] == ["user", "assistant"]
    assert_all(second)
    assert reconcile_exit_code() == 0


def test_rollback_of_a_run_waiting_for_input(server, alice, alice_key):
    from tests.api.test_human_input import ASKING
    from workflows.services.templates import template_create

    template_create(owner=alice, key="asking", name="Asks how many", graph=ASKING)
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    tid = thread["thread_id"]
    client.runs.wait(tid, "asking", input=TURN)
    waiting = WorkflowExecution.objects.get(conversation_id=tid)

    client.runs.wait(tid, "universal_chat", input=TURN, multitask_strategy="rollback")

    waiting.refresh_from_db()
    assert waiting.status == "cancelled" and waiting.llm_calls == 1  # the call before its question: kept on it
    assert client.threads.get(tid)["status"] == "idle" and len(client.runs.list(tid)) == 1
    assert Conversation.objects.get(pk=tid).message_count == 2
    assert_rolled_back_run_kept(waiting)
    assert reconcile_exit_code() == 0


async def test_rollback_of_a_running_run_cancels_it_and_keeps_what_it_spent_on_the_books(graph_server, openai_stub,
                                                                                         alice_key):
    client = get_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_held_call(openai_stub)  # the first run's call
    script_turn(openai_stub)  # the second run's two calls
    thread = await client.threads.create()
    tid = thread["thread_id"]
    stream = client.runs.stream(tid, "calculator_agent", input=TURN, stream_mode=["values"])
    async for part in stream:  # until its model call has started
        if model_call_started(part):
            break
    await sync_to_async(call_reached)(openai_stub)
    await stream.aclose()  # the default on_disconnect ("continue"): the run goes on without its reader
    first = await sync_to_async(WorkflowExecution.objects.get)(conversation_id=tid)
    assert first.status == "running"

    waited = asyncio.ensure_future(client.runs.wait(tid, "calculator_agent", input=TURN, multitask_strategy="rollback"))
    await sync_to_async(released_once_cancel_asked)(openai_stub, first.pk)
    values = await waited

    first = await sync_to_async(WorkflowExecution.objects.get)(pk=first.pk)
    second = await sync_to_async(WorkflowExecution.objects.exclude(pk=first.pk).get)(conversation_id=tid)
    assert first.status == "cancelled" and second.status == "completed"
    assert values["messages"][-1]["content"] == "12*7 = 84"
    assert [r["run_id"] for r in await client.runs.list(tid)] == [str(second.pk)]
    # What the rolled-back run spent stays on it: its call, tokens and cost (nothing is lost).
    assert first.total_tokens == 34 and await sync_to_async(LLMCall.objects.filter(execution=first).count)() == 1
    assert not await sync_to_async(Message.objects.filter(execution=first).exists)()
    conversation = await sync_to_async(Conversation.objects.get)(pk=tid)
    # The thread holds the second run's messages alone: its input, the tool call, the tool's answer, the reply.
    assert conversation.total_tokens == second.total_tokens == 146 and conversation.message_count == 4
    await sync_to_async(assert_rolled_back_run_kept)(first)
    await sync_to_async(assert_all)(second)
    assert await sync_to_async(reconcile_exit_code)() == 0


# The held call answers with a tool call (a node comes after it, where the run finds the cancel) or in words: then
# the graph ends with that call, and the run must still find the cancel asked while it was under way.
@pytest.mark.parametrize("answer", ["tool_call", "words"])
async def test_a_stream_with_on_disconnect_cancel_cancels_its_run_when_the_client_goes(graph_server, openai_stub,
                                                                                      alice_key, answer):
    client = get_client(url=graph_server.langgraph_url, api_key=alice_key)
    if answer == "tool_call":
        script_held_call(openai_stub)
    else:
        openai_stub.reply(content="12*7 = 84", usage=SLOW, hold=True)
    thread = await client.threads.create()
    stream = client.runs.stream(thread["thread_id"], "calculator_agent", input=TURN, stream_mode=["values"],
                                on_disconnect="cancel")
    async for part in stream:
        if model_call_started(part):
            break
    await sync_to_async(call_reached)(openai_stub)
    await stream.aclose()
    run_id = (await client.runs.list(thread["thread_id"]))[0]["run_id"]
    await sync_to_async(released_once_cancel_asked)(openai_stub, run_id)

    execution = await sync_to_async(ended)(run_id)

    assert execution.status == "cancelled"
    assert (await client.runs.get(thread["thread_id"], run_id))["status"] == "interrupted"
    assert execution.total_tokens == 34  # its call was answered before it stopped: accounted all the same
    await sync_to_async(assert_all)(execution)
    assert await sync_to_async(reconcile_exit_code)() == 0


def test_joining_a_stream_with_cancel_on_disconnect_cancels_the_run_when_the_client_goes(graph_server, openai_stub,
                                                                                        alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_held_call(openai_stub)
    thread = client.threads.create()
    streamed = client.runs.stream(thread["thread_id"], "calculator_agent", input=TURN, stream_mode=["values"])
    run_id = next(streamed).data["run_id"]  # its metadata frame; this reader leaves, the run goes on
    streamed.close()
    joined = client.runs.join_stream(thread["thread_id"], run_id, stream_mode=["values"], cancel_on_disconnect=True)
    for part in joined:
        if model_call_started(part):
            break
    call_reached(openai_stub)
    joined.close()
    released_once_cancel_asked(openai_stub, run_id)

    execution = ended(run_id)

    assert execution.status == "cancelled" and execution.total_tokens == 34
    assert_all(execution)
