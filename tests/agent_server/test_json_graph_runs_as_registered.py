"""A Chatter graph's run on a thread (the built-in universal_chat, its model the fake OpenAI server) streams and
stops as a registered graph's does, through the official langgraph-sdk against a real daphne server: its
`checkpoints` stream (and `checkpoint` debug events) is the thread's history as it is saved; static breakpoints by
node id stop it (the run `interrupted`, the thread's `next` the node) and a run with no input goes on from there;
streamed message ids are those of the thread's state. Every run's figures add up (I1–I3)."""
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError

from conversations.models import Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.agent_server.test_graph_state_threads import scripted_thread as thread_of
from tests.agent_server.test_graph_state_threads import USAGE, turn
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
OPENAI = {"configurable": {"provider": "openai", "model": "gpt-4o-mini"}}


def assert_books_balance(thread_id, status: str = "completed") -> None:
    """Every run of the thread in `status`; an ended one's figures add up (I1–I7); the aggregates reconcile."""
    for execution in WorkflowExecution.objects.filter(conversation_id=thread_id):
        assert execution.status == status
        if status != "waiting":  # (the invariants are those of an ended run)
            assert_all(execution)
    assert reconcile_exit_code() == 0


def test_its_checkpoints_stream_is_the_threads_history_as_it_is_saved(graph_server, openai_stub, alice_key):
    client, tid = thread_of(graph_server, openai_stub, alice_key, "One.", "Two.")
    client.runs.wait(tid, "universal_chat", input=turn("First?"), config=OPENAI)

    parts = list(client.runs.stream(tid, "universal_chat", input=turn("Second?"), config=OPENAI,
                                    stream_mode=["checkpoints", "debug"]))

    checkpoints = [p.data for p in parts if p.event == "checkpoints"]
    second = WorkflowExecution.objects.filter(conversation_id=tid).order_by("created_at").last()
    history = [h for h in reversed(client.threads.get_history(tid, limit=100))
               if h["metadata"]["run_id"] == str(second.pk)]
    assert [c["config"]["configurable"]["checkpoint_id"] for c in checkpoints] == [
        h["checkpoint"]["checkpoint_id"] for h in history] and len(checkpoints) >= 4
    assert [c["metadata"]["step"] for c in checkpoints] == [h["metadata"]["step"] for h in history]
    assert [c["next"] for c in checkpoints] == [h["next"] for h in history]
    assert [c["parent_config"]["configurable"]["checkpoint_id"] for c in checkpoints] == [
        h["parent_checkpoint"]["checkpoint_id"] for h in history]  # the first one's parent: the first run's last
    assert checkpoints[0]["metadata"]["source"] == "input" and checkpoints[-1]["next"] == []
    assert all(c["config"]["configurable"]["thread_id"] == tid for c in checkpoints)
    assert "chatter" not in checkpoints[-1]["config"]["configurable"]
    assert [m["content"] for m in checkpoints[-1]["values"]["messages"]] == ["First?", "One.", "Second?", "Two."]
    assert checkpoints[-1]["values"] == client.threads.get_state(tid)["values"]
    assert {"id", "name"} <= checkpoints[1]["tasks"][0].keys()
    debug = [p.data for p in parts if p.event == "debug" and p.data["type"] == "checkpoint"]
    assert [d["payload"] for d in debug] == checkpoints
    assert_books_balance(tid)


def test_a_breakpoint_before_a_node_stops_the_run_and_a_run_without_input_goes_on(
        graph_server, openai_stub, alice_key):
    client, tid = thread_of(graph_server, openai_stub, alice_key, "Hello.")

    stopped = client.runs.wait(tid, "universal_chat", input=turn("Hi"), config=OPENAI, interrupt_before=["model"])

    state = client.threads.get_state(tid)
    assert state["next"] == ["model"] and state["interrupts"] == []
    assert [m["content"] for m in stopped["messages"]] == ["Hi"] and not openai_stub.requests
    assert "__interrupt__" not in stopped  # a static breakpoint asks nothing, as on LangGraph's server
    run = client.runs.list(tid)[0]
    thread = client.threads.get(tid)
    assert run["status"] == "interrupted" and (thread["status"], thread["interrupts"]) == ("interrupted", {})
    assert [t["thread_id"] for t in client.threads.search(status="interrupted")] == [tid]
    assert client.threads.search(status="idle") == []
    assert_books_balance(tid, status="waiting")

    final = client.runs.wait(tid, "universal_chat", input=None, config=OPENAI)

    assert [m["content"] for m in final["messages"]] == ["Hi", "Hello."]
    assert client.threads.get(tid)["status"] == "idle" and client.threads.search(status="interrupted") == []
    assert client.threads.get_state(tid)["next"] == [] and client.runs.get(tid, run["run_id"])["status"] == "success"
    execution = WorkflowExecution.objects.get(conversation_id=tid)  # the run that stopped is the run that went on
    assert (execution.llm_calls, execution.total_tokens) == (1, 24)
    assert list(Message.objects.filter(conversation_id=tid).order_by("sequence").values_list("role", "content")) == [
        ("user", "Hi"), ("assistant", "Hello.")]
    assert_books_balance(tid)


def test_a_breakpoint_after_a_node_stops_after_it_and_a_resume_command_goes_on(graph_server, openai_stub, alice_key):
    client, tid = thread_of(graph_server, openai_stub, alice_key, "Hello.")

    parts = list(client.runs.stream(tid, "universal_chat", input=turn("Hi"), config=OPENAI, interrupt_after=["model"],
                                    stream_mode=["updates", "values"]))

    assert [p.data for p in parts if p.event == "updates"][-1] == {"__interrupt__": []}  # as LangGraph streams it
    assert [m["content"] for m in [p.data for p in parts if p.event == "values"][-1]["messages"]] == ["Hi", "Hello."]
    assert parts[-1].event == "end" and client.threads.get(tid)["status"] == "interrupted"
    state = client.threads.get_state(tid)
    assert state["next"] == ["end"] and [m["content"] for m in state["values"]["messages"]] == ["Hi", "Hello."]
    execution = WorkflowExecution.objects.get(conversation_id=tid)
    assert (execution.status, execution.llm_calls, execution.total_tokens) == ("waiting", 1, 24)
    assert_books_balance(tid, status="waiting")

    client.runs.wait(tid, "universal_chat", command={"resume": "go on"})

    assert client.threads.get_state(tid)["next"] == [] and len(openai_stub.requests) == 1
    execution.refresh_from_db()
    assert (execution.llm_calls, execution.total_tokens) == (1, 24)
    assert_books_balance(tid)


def test_a_breakpoint_the_graph_cannot_meet_is_refused_and_writes_nothing(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]

    for options in ({"interrupt_before": ["no_such_node"]}, {"interrupt_after": "model"},
                    {"interrupt_after": [3]}):
        with pytest.raises(UnprocessableEntityError):
            client.runs.create(tid, "universal_chat", input=turn("Hi"), **options)
    for options in ({"interrupt_before": ["model"]}, {"stream_mode": ["checkpoints"]}):  # a run without a thread
        with pytest.raises(UnprocessableEntityError):
            client.runs.create(None, "universal_chat", input=turn("Hi"), **options)

    assert WorkflowExecution.objects.count() == 0 and Message.objects.count() == 0


def test_streamed_message_ids_are_the_threads_own(graph_server, openai_stub, alice_key):
    client, tid = thread_of(graph_server, openai_stub, alice_key, "Hello there.")

    parts = list(client.runs.stream(tid, "universal_chat", input=turn("Hi"), config=OPENAI,
                                    stream_mode=["messages-tuple", "messages", "values"]))

    reply = client.threads.get_state(tid)["values"]["messages"][-1]
    tuples = [p.data[0] for p in parts if p.event == "messages"]
    complete = [p.data[-1] for p in parts if p.event == "messages/complete"]
    assert tuples and {chunk["id"] for chunk in tuples} == {reply["id"]}
    assert "".join(chunk["content"] for chunk in tuples) == "Hello there."
    assert complete and complete[-1]["id"] == reply["id"]
    assert [p.data for p in parts if p.event == "values"][-1]["messages"][-1]["id"] == reply["id"]
    assert_books_balance(tid)


def test_a_reply_of_tool_calls_alone_streams_the_threads_own_id(graph_server, openai_stub, alice_key):
    client, tid = thread_of(graph_server, openai_stub, alice_key)
    openai_stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}}], usage=USAGE)
    openai_stub.reply(content="It is 84.", usage=USAGE)

    parts = list(client.runs.stream(tid, "universal_chat", input=turn("What is 12*7?"), config=OPENAI,
                                    stream_mode=["messages-tuple", "messages"]))

    _, asked, told, answered = client.threads.get_state(tid)["values"]["messages"]
    assert asked["tool_calls"][0]["name"] == "calculator" and asked["content"] == ""
    chunks = [p.data[0] for p in parts if p.event == "messages"]
    assert [c["id"] for c in chunks if c.get("chunk_position") == "last"] == [asked["id"], answered["id"]]
    assert {c["id"] for c in chunks} == {asked["id"], told["id"], answered["id"]}  # the tool's message whole
    assert "".join(c["content"] for c in chunks if c["id"] == answered["id"]) == "It is 84."
    assert [p.data[-1]["id"] for p in parts if p.event == "messages/complete"] == [
        asked["id"], told["id"], answered["id"]]
    assert_books_balance(tid)


def test_a_gateway_call_on_a_thread_is_a_turn_of_its_state(graph_server, openai_stub, alice_key):
    import httpx

    client, tid = thread_of(graph_server, openai_stub, alice_key, "Hello.", "Fine, thanks.")
    client.runs.wait(tid, "universal_chat", input=turn("Hi"), config=OPENAI)

    called = httpx.post(f"{graph_server.base_url}/v1/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {alice_key}", "X-Chatter-Conversation": tid},
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "How are you?"}]})

    assert called.status_code == 200, called.content
    assert called.json()["choices"][0]["message"]["content"] == "Fine, thanks."
    # the model was sent what the call sent (the gateway's contract); the thread's state holds the turn too
    assert [m["content"] for m in openai_stub.requests[-1].body["messages"] if m["role"] != "system"] == [
        "How are you?"]
    state = client.threads.get_state(tid)
    assert [m["content"] for m in state["values"]["messages"]] == ["Hi", "Hello.", "How are you?", "Fine, thanks."]
    runs = {h["metadata"]["run_id"] for h in client.threads.get_history(tid, limit=100)}
    assert runs == {str(pk) for pk in WorkflowExecution.objects.filter(conversation_id=tid).values_list("pk", flat=True)}
    assert len(runs) == 2 and Message.objects.filter(conversation_id=tid).count() == 4
    assert_books_balance(tid)
