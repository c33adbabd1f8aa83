"""LangGraph's thread streaming protocol over the official langgraph-sdk (`client.threads.stream`) against a real
daphne server: a run started by a command streams the graph's values, custom parts and lifecycle; the question
is `input.requested` and `run.respond` answers it; the thread's state and messages are the graph's own, with
Chatter's accounting."""
import threading
import time

import pytest
from langgraph_sdk import get_client, get_sync_client

from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
START = {"messages": [], "value": "init", "items": []}


async def test_a_thread_stream_runs_the_graph_pauses_and_goes_on(graph_server, alice_key):
    client = get_client(url=graph_server.langgraph_url, api_key=alice_key)
    async with client.threads.stream(assistant_id="stateful") as thread:
        await thread.run.start(input=START)
        snapshots = [snapshot async for snapshot in thread.values]

        assert thread.interrupted and thread.interrupts[0]["value"] == {"question": "Go on?", "value": "greeted"}
        assert snapshots and snapshots[-1]["items"] == ["greeted", "tool"]
        await thread.run.respond("yes")
        final = await thread.output

    assert final["items"] == ["greeted", "tool", "asked"]


def test_the_sync_client_streams_custom_parts_and_the_run_is_accounted(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    with client.threads.stream(assistant_id="stateful") as thread:
        # The custom parts are read from a stream opened before the run starts: the SDK's lifecycle watcher (a
        # stream of its own) ends every subscription once it sees the question, so one opened after the run
        # started could be ended, on a busy machine, before it had what came before
        # (docs/api/langgraph.md#the-thread-streaming-protocol).
        custom = []
        reading = threading.Thread(target=lambda: custom.extend(thread.subscribe(["custom"])))
        reading.start()
        time.sleep(0.3)
        thread.run.start(input=START)
        reading.join(30)
        assert not reading.is_alive() and thread.interrupted
        thread.run.respond("yes")
        final = thread.output
        thread_id = thread.thread_id

    assert custom and [e["params"]["data"] for e in custom][:2] == [{"step": "greet", "phase": "start"},
                                                                    {"step": "greet", "phase": "end"}]
    assert final["items"] == ["greeted", "tool", "asked"]
    execution = WorkflowExecution.objects.get(conversation_id=thread_id)
    assert execution.status == "completed"
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_two_threads_stream_at_once(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    results, errors = {}, []

    def drive(label):
        try:
            with client.threads.stream(assistant_id="stateful") as thread:
                thread.run.start(input=START)
                for _ in thread.values:
                    if thread.interrupted:
                        break
                thread.run.respond("yes")
                results[label] = thread.output["items"]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=drive, args=(label,)) for label in "AB"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    if errors:
        print("LOG", graph_server.log.read_text()[-6000:])
    assert not errors and results == {"A": ["greeted", "tool", "asked"], "B": ["greeted", "tool", "asked"]}


def test_the_websocket_transport_carries_the_same_events(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    with client.threads.stream(assistant_id="stateful", transport="websocket",
                               headers={"x-api-key": alice_key}) as thread:
        thread.run.start(input=START)
        snapshots = list(thread.values)
        assert thread.interrupted and snapshots[-1]["items"] == ["greeted", "tool"]
        thread.run.respond("yes")
        assert thread.output["items"] == ["greeted", "tool", "asked"]


def test_a_socket_without_a_key_is_refused(graph_server):
    import asyncio

    import websockets

    async def handshake():
        url = graph_server.base_url.replace("http", "ws") + "/langgraph/threads/00000000-0000-0000-0000-000000000001"
        async with websockets.connect(url + "/stream/events") as socket:
            await socket.recv()

    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        asyncio.run(handshake())
    assert closed.value.rcvd.code == 4401


def test_another_users_thread_has_no_event_stream_for_bob(graph_server, alice, bob_key):
    import asyncio

    import httpx
    import websockets

    from tests.factories import ConversationFactory

    thread = ConversationFactory(owner=alice)
    path = f"/langgraph/threads/{thread.pk}/stream/events"

    with httpx.stream("POST", graph_server.base_url + path, json={"channels": ["values"]}, timeout=20,
                      headers={"x-api-key": bob_key}) as answered:
        status = answered.status_code

    assert status == 404  # as GET of the thread is (it was a 200 and an empty stream left open)

    async def subscribe():
        async with websockets.connect(graph_server.base_url.replace("http", "ws") + path,
                                      additional_headers={"x-api-key": bob_key}) as socket:
            await socket.send('{"id": 1, "method": "subscription.subscribe", "params": {"channels": ["values"]}}')
            await socket.recv()
            await asyncio.wait_for(socket.recv(), 10)  # (a socket left open times out here)

    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        asyncio.run(subscribe())
    assert closed.value.rcvd.code == 4404


def test_a_factory_asking_for_a_server_runtime_is_refused_by_name(graph_server, alice_key):
    import httpx

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.runs.wait(thread["thread_id"], "runtime_factory", input=START)

    assert refused.value.response.status_code == 422
    assert [e["code"] for e in refused.value.response.json()["errors"]] == ["unsupported_factory"]
    assert "ServerRuntime" in refused.value.response.json()["detail"]
    assert not WorkflowExecution.objects.exists()
