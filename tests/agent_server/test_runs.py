"""Runs over the official langgraph-sdk against a real daphne server: a run IS a WorkflowExecution run by the same
runner; on a thread it is a chat turn in that conversation, with tokens and cost exact everywhere."""
import uuid

import httpx
import pytest
from asgiref.sync import sync_to_async
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError

from conversations.models import Conversation, Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
ALL_MODES = ["values", "updates", "messages-tuple", "messages", "events", "custom", "debug"]


def test_waiting_for_a_run_on_a_thread_is_a_chat_turn_with_exact_accounting(server, alice, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    values = client.runs.wait(thread["thread_id"], "universal_chat", input=TURN, metadata={"source": "sdk"})

    execution = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    question, reply = Message.objects.filter(execution=execution).order_by("sequence")
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "tool", "ai"]  # the graph's state
    assert "84" in values["messages"][-1]["content"] and values["messages"][0]["id"] == str(question.pk)
    assert values["messages"][-1]["id"] == reply.metadata["message_id"] and reply.content == values["messages"][-1][
        "content"]
    answers = [m["usage_metadata"] for m in values["messages"] if m["type"] == "ai"]  # each its call's usage
    assert sum(u["input_tokens"] for u in answers) == execution.prompt_tokens == reply.prompt_tokens > 0
    assert sum(u["output_tokens"] for u in answers) == execution.completion_tokens == reply.completion_tokens > 0
    assert execution.workflow_type == "chat" and execution.template.key == "universal_chat"
    assert execution.tool_calls == 1 and execution.llm_calls == 2
    run = client.runs.get(thread["thread_id"], str(execution.pk))
    assert run["status"] == "success" and run["metadata"] == {"source": "sdk"}
    assert run["assistant_id"] == "universal_chat" and run["thread_id"] == thread["thread_id"]
    assert run["chatter"]["total_tokens"] == execution.total_tokens and run["chatter"]["cost"] == str(execution.cost)
    assert [r["run_id"] for r in client.runs.list(thread["thread_id"])] == [str(execution.pk)]
    assert_all(execution)
    assert reconcile_exit_code() == 0


async def test_a_streamed_run_speaks_each_stream_mode(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()
    created = []

    parts = [part async for part in client.runs.stream(thread["thread_id"], "universal_chat", input=TURN,
                                                       stream_mode=ALL_MODES, on_run_created=created.append)]

    execution = await sync_to_async(WorkflowExecution.objects.get)(conversation_id=thread["thread_id"])
    events = [part.event for part in parts]
    assert events[0] == "metadata" and parts[0].data["run_id"] == str(execution.pk) == created[0]["run_id"]
    assert events[-1] == "end" and execution.status == "completed"
    assert set(events) >= {"values", "updates", "messages", "messages/partial", "messages/complete", "events",
                           "custom", "debug"}
    values = [part.data for part in parts if part.event == "values"]
    assert [m["type"] for m in values[0]["messages"]] == ["human"]
    assert [m["type"] for m in values[-1]["messages"]] == ["human", "ai", "tool", "ai"] and "84" in values[-1]["messages"][-1][
        "content"]
    assert {node for part in parts if part.event == "updates" for node in part.data} >= {"model", "tools"}
    chunks = [part.data[0] for part in parts if part.event == "messages"]
    usage = [chunk["usage_metadata"] for chunk in chunks if chunk.get("usage_metadata")]
    assert len(usage) == execution.llm_calls == 2
    assert sum(u["input_tokens"] for u in usage) == execution.prompt_tokens
    assert sum(u["output_tokens"] for u in usage) == execution.completion_tokens
    streamed_text = "".join(chunk["content"] for chunk in chunks)
    assert values[-1]["messages"][-1]["content"] in streamed_text
    custom = [part.data for part in parts if part.event == "custom"]
    done = [envelope for envelope in custom if envelope["event"] == "workflow_completed"]
    assert done[0]["data"]["cost"] == str(execution.cost) and done[0]["data"]["total_tokens"] == execution.total_tokens
    debug_types = [part.data["type"] for part in parts if part.event == "debug"]
    assert debug_types.count("task") == debug_types.count("task_result") > 0
    kinds = {part.data["event"] for part in parts if part.event == "events"}
    assert {"on_chain_start", "on_chat_model_stream", "on_chat_model_end", "on_tool_end", "on_chain_end"} <= kinds
    await sync_to_async(assert_all)(execution)


async def test_joining_a_runs_stream_resumes_after_the_last_event_id(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()
    modes = ["values", "updates", "custom"]
    first = [part async for part in client.runs.stream(thread["thread_id"], "universal_chat", input=TURN,
                                                       stream_mode=modes)]
    run_id = first[0].data["run_id"]
    cut = len(first) // 2

    resumed = [part async for part in client.runs.join_stream(thread["thread_id"], run_id,
                                                              last_event_id=first[cut].id)]
    replayed = [part async for part in client.runs.join_stream(thread["thread_id"], run_id, stream_mode=["updates"])]

    assert [(p.id, p.event, p.data) for p in resumed] == [(p.id, p.event, p.data) for p in first[cut + 1:]]
    assert resumed[-1].event == "end"
    assert [p.event for p in replayed] == ["metadata", *(["updates"] * (len(replayed) - 2)), "end"]
    assert len(replayed) - 2 == sum(1 for p in first if p.event == "updates")


async def test_a_runs_first_values_are_its_threads_at_its_start_however_late_they_are_read(server, alice_key):
    """The values of a run's start are the thread's as it started (its own user message, none of its replies),
    also when the frame is made after the run has ended: a client reading behind the run (make test's SQLite phase
    on three workers saw the whole answer in the first values) or replaying its log."""
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "universal_chat", input=TURN)  # ended before its stream is read
    (run,) = await client.runs.list(thread["thread_id"])

    replayed = [part async for part in client.runs.join_stream(thread["thread_id"], run["run_id"],
                                                               stream_mode=["values"])]

    values = [part.data for part in replayed if part.event == "values"]
    assert [m["type"] for m in values[0]["messages"]] == ["human"]
    assert [m["type"] for m in values[-1]["messages"]] == ["human", "ai", "tool", "ai"]


def test_a_run_without_a_thread_keeps_its_accounting_on_the_run(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    values = client.runs.wait(None, "universal_chat", input=TURN)
    streamed = list(client.runs.stream(None, "universal_chat", input={"messages": [{"role": "user",
                                                                                    "content": "hello"}]}))

    waited, stream_run = WorkflowExecution.objects.order_by("created_at")
    assert waited.conversation_id is None and waited.status == stream_run.status == "completed"
    assert [m["type"] for m in values["messages"]] == ["human", "ai"] and "84" in values["messages"][1]["content"]
    assert values["messages"][1]["usage_metadata"]["total_tokens"] == waited.total_tokens > 0
    assert values["messages"][1]["response_metadata"]["cost"] == str(waited.cost)
    assert streamed[0].event == "metadata" and streamed[0].data["run_id"] == str(stream_run.pk)
    assert [m["type"] for m in streamed[-2].data["messages"]] == ["human", "ai"] and streamed[-1].event == "end"
    assert_all(waited)
    assert_all(stream_run)


def test_a_background_run_is_pending_until_a_worker_runs_it_and_can_be_cancelled(server, alice_key, tmp_path):
    from tests.fixtures_server import start_worker, stop_process

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    pending = client.runs.create(thread["thread_id"], "universal_chat", input=TURN)  # no worker yet

    assert pending["status"] == "pending" and client.threads.get(thread["thread_id"])["status"] == "busy"
    cancelled = client.runs.cancel(thread["thread_id"], pending["run_id"], wait=True)
    assert cancelled["status"] == "interrupted"
    assert client.runs.join(thread["thread_id"], pending["run_id"])["__error__"]["error"] == "cancelled"

    worker = start_worker(tmp_path)
    try:
        queued = client.runs.create(thread["thread_id"], "universal_chat", input=TURN)
        values = client.runs.join(thread["thread_id"], queued["run_id"])
    finally:
        stop_process(worker)

    assert "84" in values["messages"][-1]["content"]
    assert [r["status"] for r in client.runs.list(thread["thread_id"])] == ["success", "interrupted"]
    for execution in WorkflowExecution.objects.all():
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_cancel_many_cancels_the_runs_named_or_those_of_a_status_and_only_the_owners(server, alice, alice_key,
                                                                                    bob_key):
    from langgraph_sdk.errors import NotFoundError, PermissionDeniedError

    from tests.factories import ApiTokenFactory

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bobs = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    first, second, done_on = (client.threads.create()["thread_id"] for _ in range(3))
    running = client.runs.create(first, "universal_chat", input=TURN)["run_id"]  # no worker: pending
    queued = client.runs.create(first, "universal_chat", input=TURN)["run_id"]  # queued behind it
    other = client.runs.create(second, "universal_chat", input=TURN)["run_id"]
    client.runs.wait(done_on, "universal_chat", input=TURN)
    done = client.runs.list(done_on)[0]["run_id"]
    bob_thread = bobs.threads.create()["thread_id"]
    bobs_run = bobs.runs.create(bob_thread, "universal_chat", input=TURN)["run_id"]

    def statuses():
        return {run_id: WorkflowExecution.objects.get(pk=run_id).status
                for run_id in (running, queued, other, done, bobs_run)}
    before = statuses()
    for named in ([running, bobs_run], [running, other], [running, str(uuid.uuid4())]):
        with pytest.raises(NotFoundError):  # another user's, another thread's, a missing one: none is cancelled
            client.runs.cancel_many(thread_id=first, run_ids=named)
    with pytest.raises(NotFoundError):
        client.runs.cancel_many(thread_id=bob_thread, run_ids=[bobs_run])
    for bad in ({}, {"thread_id": first}, {"run_ids": ["not-a-run-id"]}, {"status": "finished"},
                {"status": "all", "run_ids": [running]}):
        with pytest.raises(UnprocessableEntityError):
            client.runs.cancel_many(**bad)
    with pytest.raises(UnprocessableEntityError):
        client.runs.cancel_many(status="pending", action="forget")
    reader = get_sync_client(url=server.langgraph_url, api_key=ApiTokenFactory(user=alice, scopes=["read"]).key)
    with pytest.raises(PermissionDeniedError):
        reader.runs.cancel_many(status="all")
    assert statuses() == before

    client.runs.cancel_many(thread_id=first, run_ids=[running, queued])
    client.runs.cancel_many(thread_id=done_on, run_ids=[done])  # an ended run is passed over, as the stock server's
    assert [r["status"] for r in client.runs.list(first)] == ["interrupted", "interrupted"]
    assert statuses()[other] == "pending" and statuses()[done] == "completed"
    client.runs.cancel_many(thread_id=second, run_ids=[other], action="rollback")
    assert client.runs.list(second) == []  # taken out of its thread, its row kept
    client.runs.cancel_many(status="pending")
    assert statuses() == {**before, running: "cancelled", queued: "cancelled", other: "cancelled"}
    assert statuses()[bobs_run] == "pending"  # bob's runs are his
    assert Conversation.objects.get(pk=first).runs_queued == 0
    assert client.threads.get(first)["status"] == client.threads.get(second)["status"] == "idle"
    bobs.runs.cancel(bob_thread, bobs_run)


def test_create_batch_starts_background_runs_all_or_none(server, alice, alice_key, bob_key):
    from langgraph_sdk.errors import NotFoundError, PermissionDeniedError

    from tests.factories import ApiTokenFactory

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    bob_thread = get_sync_client(url=server.langgraph_url, api_key=bob_key).threads.create()["thread_id"]
    stateless = {"assistant_id": "universal_chat", "input": TURN, "metadata": {"n": 1}}

    with pytest.raises(NotFoundError):  # bob's thread: nothing is written, the run before it neither
        client.runs.create_batch([stateless, {**stateless, "thread_id": bob_thread}])
    for bad in ([], [stateless, {**stateless, "stream_mode": ["no_such_mode"]}], [{"input": TURN}],
                [stateless, {**stateless, "thread_id": thread, "multitask_strategy": "interrupt"}],
                [stateless, {**stateless, "context": {"temperature": 9}}]):
        with pytest.raises(UnprocessableEntityError):
            client.runs.create_batch(bad)
    reader = get_sync_client(url=server.langgraph_url, api_key=ApiTokenFactory(user=alice, scopes=["read"]).key)
    with pytest.raises(PermissionDeniedError):
        reader.runs.create_batch([stateless])
    assert WorkflowExecution.objects.count() == 0 and Message.objects.count() == 0

    runs = client.runs.create_batch([stateless, {**stateless, "thread_id": thread},
                                     {**stateless, "thread_id": thread, "metadata": {"n": 3}}])

    assert [run["status"] for run in runs] == ["pending"] * 3  # no worker: they wait for one
    assert [run["thread_id"] for run in runs] == [None, thread, thread]
    assert [run["metadata"] for run in runs] == [{"n": 1}, {"n": 1}, {"n": 3}]
    assert sorted(r["run_id"] for r in client.runs.list(thread)) == sorted(r["run_id"] for r in runs[1:])
    assert Conversation.objects.get(pk=thread).runs_queued == 1  # the second waits behind the first
    client.runs.cancel_many(status="all")


def test_a_busy_thread_rejects_a_run_or_queues_it_behind_the_one_in_progress(server, alice_key, tmp_path):
    from tests.fixtures_server import start_worker, stop_process

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    first = client.runs.create(thread["thread_id"], "universal_chat", input=TURN)  # pending: the thread is busy

    with pytest.raises(httpx.HTTPStatusError) as rejected:
        client.runs.wait(thread["thread_id"], "universal_chat", input=TURN, multitask_strategy="reject")
    second = client.runs.create(thread["thread_id"], "universal_chat", multitask_strategy="enqueue",
                                input={"messages": [{"role": "user", "content": "hello"}]})

    assert rejected.value.response.status_code == 409
    assert WorkflowExecution.objects.count() == 2
    # While it waits no task exists for it, and the recovery sweep does not queue one (it would run at once).
    from datetime import timedelta

    from django.utils import timezone

    from workflows.services.recovery import executions_requeue_lost
    waiting = WorkflowExecution.objects.get(pk=second["run_id"])
    assert executions_requeue_lost(runs=[waiting], now=timezone.now() + timedelta(seconds=60)) == []
    worker = start_worker(tmp_path)
    try:
        values = client.runs.join(thread["thread_id"], second["run_id"])
    finally:
        stop_process(worker)
    first_run = WorkflowExecution.objects.get(pk=first["run_id"])
    second_run = WorkflowExecution.objects.get(pk=second["run_id"])
    assert first_run.status == second_run.status == "completed" and second_run.mode == "background"
    assert second_run.started_at >= first_run.completed_at  # it waited for the first to end
    assert values["messages"][-1]["content"].startswith("(local model)")
    for execution in (first_run, second_run):
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_runs_sent_at_once_to_an_idle_thread_start_one_the_others_are_rejected(server, alice_key):
    """The busy-thread check and the run's insert hold together (the run's creating transaction checks again under
    the conversation's row lock): of runs sent at once with `reject`, one is taken, every other is a 409 that
    leaves nothing behind."""
    from concurrent.futures import ThreadPoolExecutor

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    def send(number: int) -> int:
        response = httpx.post(f"{server.langgraph_url}/threads/{thread['thread_id']}/runs", timeout=60,
                              headers={"x-api-key": alice_key}, json={
                                  "assistant_id": "universal_chat", "multitask_strategy": "reject",
                                  "input": {"messages": [{"role": "user", "content": f"turn {number}"}]}})
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(send, range(8)))

    assert statuses == [200] + [409] * 7
    run = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    assert list(Message.objects.filter(conversation_id=thread["thread_id"]).values_list("execution_id", "role")) == [
        (run.pk, "user")]
    # Nothing runs the run taken here: cancelled, it leaves the shared server idle for the next test (a pending one
    # would have it replaced, tests/fixtures_server.py SharedServers).
    assert client.runs.cancel(thread["thread_id"], str(run.pk), wait=True)["status"] == "interrupted"


@pytest.mark.postgres
def test_runs_of_a_python_graph_sent_at_once_to_an_idle_thread_run_one_at_a_time(graph_server, alice_key, tmp_path):
    """A registered graph's run writes no user message, so nothing of its own locked the thread: its creating
    transaction locks the conversation's row (workflows.services.runs.run_write), and of runs sent at once one
    starts, the others wait their turn (`enqueue`) or are refused (`reject`). Each run of slow_counter adds 2:
    runs that overlapped would each start from the same count and lose the others' additions."""
    import asyncio

    from tests.agent_server.conftest import GRAPHS
    from tests.fixtures_server import start_worker, stop_process

    async def send_at_once(client, strategy: str) -> tuple[list, int]:
        """Six runs sent at once to a new thread: their outcomes and the thread's count once all have answered."""
        thread_id = (await client.threads.create())["thread_id"]

        async def send() -> str:
            try:
                await client.runs.wait(thread_id, "slow_counter", input={"delay": 0.3}, multitask_strategy=strategy)
                return "ok"
            except httpx.HTTPStatusError as refused:
                return str(refused.response.status_code)
        outcomes = await asyncio.gather(*[send() for _ in range(6)])
        return sorted(outcomes), (await client.threads.get_state(thread_id))["values"]["count"]

    async def both() -> tuple:
        client = get_client(url=graph_server.langgraph_url, api_key=alice_key)
        return await send_at_once(client, "enqueue"), await send_at_once(client, "reject")

    worker = start_worker(tmp_path, CHATTER_GRAPHS=str(GRAPHS))  # runs the queued ones
    try:
        (queued, queued_count), (rejecting, rejecting_count) = asyncio.run(both())
    finally:
        stop_process(worker)

    assert queued == ["ok"] * 6 and queued_count == 12
    accepted = rejecting.count("ok")
    assert set(rejecting) <= {"ok", "409"} and rejecting_count == 2 * accepted  # (one, unless one ended first)
    for execution in WorkflowExecution.objects.all():
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_wait_and_join_answer_the_state_each_run_left_not_the_threads_now(graph_server, alice_key, tmp_path):
    """As LangGraph's server answers them: the run's own last values (its last checkpoint), not the thread's state
    when the answer is read, which holds what the runs queued behind it have done since."""
    import asyncio

    from tests.agent_server.conftest import GRAPHS
    from tests.fixtures_server import start_worker, stop_process

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    first = client.runs.create(tid, "universal_chat", input={"messages": [{"role": "user", "content": "FIRST"}]})
    second = client.runs.create(tid, "universal_chat", input={"messages": [{"role": "user", "content": "SECOND"}]})

    async def six_at_once() -> list:
        """Six runs of slow_counter (each adds 2) queued on one thread: what each wait answers."""
        sdk = get_client(url=graph_server.langgraph_url, api_key=alice_key)
        thread_id = (await sdk.threads.create())["thread_id"]
        return await asyncio.gather(*[sdk.runs.wait(thread_id, "slow_counter", input={"delay": 0.2})
                                      for _ in range(6)])

    worker = start_worker(tmp_path, CHATTER_GRAPHS=str(GRAPHS))
    try:
        second_values = client.runs.join(tid, second["run_id"])
        first_values = client.runs.join(tid, first["run_id"])  # read once the run after it has ended
        counts = sorted(values["count"] for values in asyncio.run(six_at_once()))
    finally:
        stop_process(worker)

    def said(values) -> list:
        return [message["content"] for message in values["messages"] if message["type"] == "human"]
    assert said(first_values) == ["FIRST"] and said(second_values) == ["FIRST", "SECOND"]
    assert first_values["messages"][-1]["type"] == "ai"
    assert counts == [2, 4, 6, 8, 10, 12]
    for execution in WorkflowExecution.objects.all():
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_cancelling_a_queued_run_takes_it_out_of_its_threads_queue(server, alice_key):
    """A queued run that is cancelled waits no more: its thread counts it no longer (runs_queued), as cancel_many and
    the interrupt and rollback strategies leave it."""
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.create(thread["thread_id"], "universal_chat", input=TURN)  # pending: no worker
    queued = client.runs.create(thread["thread_id"], "universal_chat", input=TURN)  # enqueued behind it
    assert Conversation.objects.get(pk=thread["thread_id"]).runs_queued == 1

    client.runs.cancel(thread["thread_id"], queued["run_id"])

    assert WorkflowExecution.objects.get(pk=queued["run_id"]).status == "cancelled"
    assert Conversation.objects.get(pk=thread["thread_id"]).runs_queued == 0
    client.runs.cancel_many(status="all")


def test_interrupting_a_busy_thread_cancels_its_runs_queued_ones_too_and_runs_the_new_one_after(
        server, alice_key, tmp_path):
    """As the stock server: every run of the thread in progress is cancelled, the one running and those queued
    behind it, so the new run is the only one that goes on."""
    from conversations.models import Conversation
    from tests.fixtures_server import start_worker, stop_process

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    first = client.runs.create(thread["thread_id"], "universal_chat", input=TURN)  # pending: the thread is busy
    queued = client.runs.create(thread["thread_id"], "universal_chat", input=TURN)  # enqueued behind it

    second = client.runs.create(thread["thread_id"], "universal_chat", input=TURN, multitask_strategy="interrupt")
    worker = start_worker(tmp_path)
    try:
        values = client.runs.join(thread["thread_id"], second["run_id"])
    finally:
        stop_process(worker)

    first_run, queued_run, second_run = (WorkflowExecution.objects.get(pk=run["run_id"])
                                         for run in (first, queued, second))
    assert first_run.status == queued_run.status == "cancelled" and second_run.status == "completed"
    assert [client.runs.get(thread["thread_id"], run["run_id"])["status"] for run in (first, queued)] == [
        "interrupted", "interrupted"]
    assert Conversation.objects.get(pk=thread["thread_id"]).runs_queued == 0  # none waits any more
    assert "84" in values["messages"][-1]["content"]
    for execution in (first_run, queued_run, second_run):
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_an_option_chatter_cannot_honour_yet_is_refused_and_writes_nothing(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    for options in ({"interrupt_after": ["no_such_node"]}, {"interrupt_before": "not-star"},
                    {"webhook": "http://127.0.0.1:9/hook"},
                    {"stream_mode": ["no_such_mode"]}, {"input": {"messages": [{"role": "robot", "content": "x"}]}}):
        with pytest.raises(UnprocessableEntityError):
            client.runs.create(thread["thread_id"], "universal_chat", **{"input": TURN, **options})
    with pytest.raises(UnprocessableEntityError):
        client.runs.create(thread["thread_id"], "universal_chat", input=TURN, context={"temperature": 9})

    assert WorkflowExecution.objects.count() == 0 and Message.objects.count() == 0


def test_a_threads_runs_are_listed_by_status_with_the_fields_selected(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "universal_chat", input=TURN)
    run = client.runs.list(thread["thread_id"])[0]

    assert client.runs.list(thread["thread_id"], status="success", select=["run_id", "status"]) == [
        {"run_id": run["run_id"], "status": "success"}]
    assert client.runs.list(thread["thread_id"], status="pending") == []
    for refused in ({"status": "no_such_status"}, {"select": ["run_id", "no_such_field"]}):
        with pytest.raises(UnprocessableEntityError):
            client.runs.list(thread["thread_id"], **refused)


def test_a_config_whose_configurable_is_not_an_object_is_refused_with_422(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    for configurable in ("abc", ["a"], 7):
        for thread_id in (thread["thread_id"], None):
            with pytest.raises(httpx.HTTPStatusError) as refused:
                client.runs.wait(thread_id, "universal_chat", input=TURN, config={"configurable": configurable})
            assert refused.value.response.status_code == 422
            assert "configurable must be an object" in refused.value.response.text

    assert WorkflowExecution.objects.count() == 0 and Message.objects.count() == 0


def test_a_templates_run_honours_its_recursion_limit_as_langgraph_does(server, alice_key):
    """A template's run, on a thread or not, is held to its config's recursion_limit: past it the run fails as
    LangGraph's GraphRecursionError (its class and message in the answer), within it the run goes to its end."""
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]

    stopped = [client.runs.wait(thread_id, "universal_chat", input=TURN, config={"recursion_limit": 1},
                                raise_error=False) for thread_id in (thread, None)]
    within = client.runs.wait(thread, "universal_chat", input=TURN, config={"recursion_limit": 25})

    for answer in stopped:
        assert answer["__error__"]["error"] == "GraphRecursionError"
        assert answer["__error__"]["message"].startswith("Recursion limit of 1 reached")
    failed = WorkflowExecution.objects.filter(status="failed")
    assert failed.count() == 2 and {e.error_type for e in failed} == {"limit_exceeded"}
    assert "84" in within["messages"][-1]["content"]
    assert [r["status"] for r in client.runs.list(thread)] == ["success", "error"]


def test_a_run_may_create_its_thread_but_a_refused_one_leaves_none(server, alice_key):
    import uuid

    from conversations.models import Conversation

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    refused, created = str(uuid.uuid4()), str(uuid.uuid4())

    with pytest.raises(httpx.HTTPStatusError) as bad:
        client.runs.wait(refused, "universal_chat", input=TURN, if_not_exists="create", context={"temperature": 9})
    values = client.runs.wait(created, "universal_chat", input=TURN, if_not_exists="create")

    assert bad.value.response.status_code == 422 and not Conversation.objects.filter(pk=refused).exists()
    assert Conversation.objects.filter(pk=created).exists() and "84" in values["messages"][-1]["content"]
    with pytest.raises(httpx.HTTPStatusError) as missing:
        client.runs.wait(str(uuid.uuid4()), "universal_chat", input=TURN)
    assert missing.value.response.status_code == 404
