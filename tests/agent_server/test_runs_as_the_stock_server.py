"""Runs as LangGraph's stock server answers them (issue 43, items 6 to 10), over the official langgraph-sdk (and raw
HTTP where the SDK hides what is checked) against a real daphne server and, where a run must be picked up by
someone else, a real django-q2 worker: /runs/wait's headers and its keep-alive newlines, a stateless run's
`on_completion`, the default multitask strategy, cancel's `interrupt` and `rollback`, and deleting a thread
whatever its runs are doing."""
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import NotFoundError

from conversations.models import Conversation, Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.agent_server.test_rollback_and_disconnect import (SLOW, call_reached, ended, released_once_cancel_asked,
                                                             script_held_call)
from tests.fixtures_server import start_worker, stop_process
from tests.invariants import assert_all
from workflows.models import RUN_IN_PROGRESS, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


def _post(server, path: str, key: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.langgraph_url}{path}", headers={"x-api-key": key}, json=body, timeout=60)


def test_item_06_wait_sends_location_and_keeps_the_connection_alive_and_the_sdk_still_parses(server, alice_key,
                                                                                             tmp_path):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    raw_tid, sdk_tid = (client.threads.create()["thread_id"] for _ in range(2))
    for tid in (raw_tid, sdk_tid):  # pending (no worker yet): the next run of each thread waits its turn
        client.runs.create(tid, "universal_chat", input=TURN)

    worker = None
    try:
        with ThreadPoolExecutor(1) as pool:
            sdk_waited = pool.submit(client.runs.wait, sdk_tid, "universal_chat", input=HELLO,
                                     multitask_strategy="enqueue")
            with httpx.stream("POST", f"{server.langgraph_url}/threads/{raw_tid}/runs/wait", timeout=120,
                              headers={"x-api-key": alice_key},
                              json={"assistant_id": "universal_chat", "input": HELLO,
                                    "multitask_strategy": "enqueue"}) as response:
                chunks = response.iter_raw()
                first = next(chunks)  # nothing runs yet: only the keep-alive can come
                worker = start_worker(tmp_path)
                body = first + b"".join(chunks)
            sdk_values = sdk_waited.result(timeout=120)
    finally:
        if worker is not None:
            stop_process(worker)

    run = WorkflowExecution.objects.filter(conversation_id=raw_tid).order_by("-created_at").first()
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.headers["location"] == f"/threads/{raw_tid}/runs/{run.pk}/join"
    assert response.headers["content-location"] == f"/threads/{raw_tid}/runs/{run.pk}"
    assert first == b"\n" and body.startswith(b"\n")  # a newline heartbeat, then the JSON body
    assert json.loads(body)["messages"][-2]["content"] == "hello" and run.status == "completed"
    assert sdk_values["messages"][-2]["content"] == "hello"  # the SDK parses a body after its heartbeats
    assert sdk_values["messages"][-1]["content"].startswith("(local model)")
    # The stateless /runs/wait names where its run is joined too (a run without a thread: under /runs/).
    stateless = _post(server, "/runs/wait", alice_key, {"assistant_id": "universal_chat", "input": TURN})
    run_id = stateless.headers["content-location"].rsplit("/", 1)[1]
    assert stateless.headers["location"] == f"/runs/{run_id}/join"
    joined = httpx.get(f"{server.langgraph_url}{stateless.headers['location']}", headers={"x-api-key": alice_key})
    assert joined.status_code == 200 and joined.json()["messages"][-1] == stateless.json()["messages"][-1]


def test_item_07_a_stateless_run_keeps_its_thread_when_asked_and_leaves_none_by_default(server, alice_key, bob_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    kept = _post(server, "/runs/wait", alice_key, {"assistant_id": "universal_chat", "input": TURN,
                                                    "on_completion": "keep"})
    created = client.runs.create(None, "universal_chat", input=HELLO, on_completion="keep")  # pending: no worker
    default = client.runs.wait(None, "universal_chat", input=TURN)
    deleted = client.runs.wait(None, "universal_chat", input=TURN, on_completion="delete")

    tid = kept.headers["location"].split("/")[2]
    thread = client.threads.get(tid)  # the run's thread, kept
    assert "84" in kept.json()["messages"][-1]["content"] and thread["values"] == kept.json()
    assert kept.headers["location"] == f"/threads/{tid}/runs/{client.runs.list(tid)[0]['run_id']}/join"
    assert created["thread_id"] is not None and client.threads.get(created["thread_id"])["status"] == "busy"
    assert client.runs.get(created["thread_id"], created["run_id"])["run_id"] == created["run_id"]
    client.runs.cancel(created["thread_id"], created["run_id"])  # (nothing runs it here)
    with pytest.raises(NotFoundError):  # the kept thread is its owner's
        get_sync_client(url=server.langgraph_url, api_key=bob_key).threads.get(tid)
    # "delete", the stock server's default: no thread is left behind
    assert "84" in default["messages"][-1]["content"] and "84" in deleted["messages"][-1]["content"]
    assert set(Conversation.objects.values_list("pk", flat=True)) == {uuid.UUID(tid),
                                                                      uuid.UUID(created["thread_id"])}
    assert WorkflowExecution.objects.filter(conversation__isnull=True).count() == 2
    with pytest.raises(httpx.HTTPStatusError) as refused:  # a value the stock server does not know
        client.runs.wait(None, "universal_chat", input=TURN, on_completion="archive")
    assert refused.value.response.status_code == 422 and Conversation.objects.count() == 2
    for execution in WorkflowExecution.objects.filter(status="completed"):
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_item_08_the_default_multitask_strategy_enqueues_behind_the_run_in_progress(server, alice_key, tmp_path):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    first = client.runs.create(tid, "universal_chat", input=TURN)  # pending: the thread is busy

    second = client.runs.create(tid, "universal_chat", input=HELLO)  # no strategy named: the stock default

    assert second["multitask_strategy"] == "enqueue" and second["status"] == "pending"
    worker = start_worker(tmp_path)
    try:
        values = client.runs.join(tid, second["run_id"])
    finally:
        stop_process(worker)
    first_run, second_run = (WorkflowExecution.objects.get(pk=run["run_id"]) for run in (first, second))
    assert first_run.status == second_run.status == "completed"
    assert second_run.started_at >= first_run.completed_at  # it waited for the first to end
    assert values["messages"][-2]["content"] == "hello"
    for execution in (first_run, second_run):
        assert_all(execution)
    assert reconcile_exit_code() == 0


def _running_run(client, openai_stub, tid: str) -> str:
    """A run of the thread that is running, its model call under way at the stub (held until the run's cancel is
    asked: released_once_cancel_asked), read by nobody."""
    script_held_call(openai_stub)
    streamed = client.runs.stream(tid, "calculator_agent", input=TURN, stream_mode=["values"])
    run_id = next(streamed).data["run_id"]  # its metadata frame; the reader leaves, the run goes on
    streamed.close()
    call_reached(openai_stub)
    openai_stub.requests.clear()
    return run_id


def test_item_09_cancel_interrupts_a_running_run_and_rollback_deletes_it(graph_server, openai_stub, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]

    with ThreadPoolExecutor(1) as pool:  # (a cancel with wait=True answers once the run has stopped)
        interrupted = _running_run(client, openai_stub, tid)
        waited = pool.submit(client.runs.cancel, tid, interrupted, wait=True)
        released_once_cancel_asked(openai_stub, interrupted)
        waited.result()
        status_at_once = client.runs.get(tid, interrupted)["status"]
        unwaited = _running_run(client, openai_stub, tid)
        client.runs.cancel(tid, unwaited, action="interrupt")
        status_after_asking = client.runs.get(tid, unwaited)["status"]  # it stops at its call's end, still held
        listed_interrupted = [run["run_id"] for run in client.runs.list(tid, status="interrupted")]
        released_once_cancel_asked(openai_stub, unwaited)
        unwaited_run = ended(unwaited)  # (the next run would queue behind it)
        rolled_back = _running_run(client, openai_stub, tid)
        waited = pool.submit(client.runs.cancel, tid, rolled_back, action="rollback", wait=True)
        released_once_cancel_asked(openai_stub, rolled_back)
        waited.result()

    assert status_at_once == status_after_asking == "interrupted"
    assert listed_interrupted == [unwaited, interrupted]
    assert unwaited_run.status == "cancelled" and client.runs.get(tid, unwaited)["status"] == "interrupted"
    with pytest.raises(NotFoundError):  # rollback deletes the run: gone from the thread's runs
        client.runs.get(tid, rolled_back)
    assert [run["run_id"] for run in client.runs.list(tid)] == [unwaited, interrupted]
    assert not Message.objects.filter(execution_id=rolled_back).exists()
    # what it spent stays on the books, on its row
    assert WorkflowExecution.objects.get(pk=rolled_back).total_tokens == SLOW["total_tokens"]
    assert reconcile_exit_code() == 0


def test_item_09_a_workers_run_is_interrupted_from_the_cancel_on(graph_server, openai_stub, alice_key,
                                                                           tmp_path):
    """The run runs in a worker (another process): it is `interrupted` from the cancel on, and wait=True answers
    once it has stopped."""
    from tests.agent_server.conftest import GRAPHS

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    script_held_call(openai_stub)
    worker = start_worker(tmp_path, CHATTER_GRAPHS=str(GRAPHS), OPENAI_BASE_URL=openai_stub.base_url,
                          OPENAI_API_KEY="sk-test-not-a-real-key")
    try:
        run_id = client.runs.create(tid, "calculator_agent", input=TURN)["run_id"]
        call_reached(openai_stub, timeout_s=60)  # the worker runs it: its model call is under way
        client.runs.cancel(tid, run_id)  # the worker sees it at its next boundary, after its call (held till then)
        status_after_asking = client.runs.get(tid, run_id)["status"]
        with ThreadPoolExecutor(1) as pool:
            waited = pool.submit(client.runs.cancel, tid, run_id, wait=True)
            released_once_cancel_asked(openai_stub, run_id)
            answered = waited.result()
        status_at_once = client.runs.get(tid, run_id)["status"]
    finally:
        stop_process(worker)

    assert status_after_asking == status_at_once == answered["status"] == "interrupted"
    execution = WorkflowExecution.objects.get(pk=run_id)
    assert execution.status == "cancelled" and execution.total_tokens == SLOW["total_tokens"]
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_item_10_deleting_a_thread_right_after_creating_a_run_always_deletes_it(server, alice_key, tmp_path):
    """Whatever the worker is doing with the run (not yet claimed, just claimed, running, ended), deleting its
    thread cancels it and deletes the thread: never a 409. Many times, so the worker's claim lands in every gap."""
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    worker = start_worker(tmp_path)
    deleted = []
    try:
        warm_up = client.threads.create()["thread_id"]  # once the worker has run one, it is up
        client.runs.join(warm_up, client.runs.create(warm_up, "universal_chat", input=TURN)["run_id"])
        for _ in range(40):
            tid = client.threads.create()["thread_id"]
            client.runs.create(tid, "universal_chat", input=TURN)
            client.threads.delete(tid)
            deleted.append(tid)
            with pytest.raises(NotFoundError):
                client.threads.get(tid)
        client.threads.delete(warm_up)
    finally:
        stop_process(worker)

    assert len(deleted) == 40 and not Conversation.objects.exists()
    assert not WorkflowExecution.objects.filter(status__in=RUN_IN_PROGRESS).exists()
    assert {"cancelled", "completed"} >= set(WorkflowExecution.objects.values_list("status", flat=True))
    assert reconcile_exit_code() == 0
