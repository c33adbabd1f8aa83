"""LangGraph's thread streaming protocol over the official langgraph-sdk (`client.threads.stream`) against a real
daphne server: a run started by a command streams the graph's values, custom parts and lifecycle; the question
is `input.requested` and `run.respond` answers it; the thread's state and messages are the graph's own, with
Chatter's accounting."""
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
        thread.run.start(input=START)
        custom = list(thread.subscribe(["custom"]))
        assert thread.interrupted
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
    import threading

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
