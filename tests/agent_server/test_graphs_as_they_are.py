"""A registered graph runs as it is, through the official langgraph-sdk against a real daphne server: its own
input and state keys (not only messages), async nodes, its stream writer's output in `custom`, `updates` naming its
own nodes, interrupt() and resume, update_state on any key, a history of checkpoints with their parents, a
factory given the run's config; every message it produced is in the thread's conversation."""
import pytest
from langgraph_sdk import get_sync_client

from conversations.models import Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from workflows.models import NodeExecution, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
START = {"messages": [], "value": "init", "items": []}


@pytest.mark.parametrize("assistant", ["stateful", "stateful_factory"])
def test_a_graph_keeps_its_own_state_pauses_and_goes_on(graph_server, alice_key, assistant):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    paused = client.runs.wait(thread["thread_id"], assistant, input=START)

    assert paused["value"] == "greeted" and paused["items"] == ["greeted", "tool"]
    assert paused["__interrupt__"][0]["value"] == {"question": "Go on?", "value": "greeted"}
    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["ask"] and state["values"]["items"] == ["greeted", "tool"]

    client.threads.update_state(thread["thread_id"], {"value": "changed"})
    assert client.threads.get_state(thread["thread_id"])["values"]["value"] == "changed"

    final = client.runs.wait(thread["thread_id"], assistant, command={"resume": "yes"})

    assert final["items"] == ["greeted", "tool", "asked"] and final["value"] == "changed"
    assert [m["content"] for m in final["messages"]] == [
        "Hello there", "", "found x", "You said yes", "from the subgraph"]
    history = client.threads.get_history(thread["thread_id"], limit=50)
    assert history[0]["values"]["items"] == ["greeted", "tool", "asked"] and history[0]["next"] == []
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert [h["parent_checkpoint"]["checkpoint_id"] for h in history[:-1]] == ids[1:]  # each step and its parent

    execution = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    assert execution.status == "completed"
    nodes = NodeExecution.objects.filter(execution=execution).order_by("index")
    assert [(n.node_id, n.status) for n in nodes] == [
        ("greet", "completed"), ("use_tool", "completed"), ("ask", "completed"), ("sub", "completed")]
    stored = execution.conversation.messages.order_by("sequence")
    assert [(m.role, m.content) for m in stored] == [
        ("assistant", "Hello there"), ("assistant", ""), ("tool", "found x"), ("assistant", "You said yes"),
        ("assistant", "from the subgraph")]
    assert stored[1].tool_calls[0]["name"] == "lookup" and stored[2].metadata["tool_call_id"] == "tc-1"
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_its_stream_names_its_nodes_and_carries_its_writer(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "stateful", input=START,
                                    stream_mode=["updates", "custom", "values"]))

    updates = [p.data for p in parts if p.event == "updates"]
    assert [next(iter(u)) for u in updates] == ["greet", "use_tool", "__interrupt__"]
    assert updates[0]["greet"]["value"] == "greeted"
    assert [p.data for p in parts if p.event == "custom"] == [{"step": "greet", "phase": "start"},
                                                               {"step": "greet", "phase": "end"}]
    values = [p.data for p in parts if p.event == "values"]
    assert values[0]["value"] == "init" and values[-1]["__interrupt__"][0]["value"]["question"] == "Go on?"
    assert parts[-1].event == "end"


def test_its_tasks_and_debug_streams_name_its_nodes_with_their_own_writes(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "stateful", input=START, stream_mode=["tasks", "debug"]))
    resumed = list(client.runs.stream(thread["thread_id"], "stateful", command={"resume": "yes"},
                                      stream_mode="tasks"))

    tasks = [p.data for p in parts if p.event == "tasks"]
    assert [(t["name"], "result" in t) for t in tasks] == [
        ("greet", False), ("greet", True), ("use_tool", False), ("use_tool", True), ("ask", False), ("ask", True)]
    assert tasks[1]["result"]["value"] == "greeted" and tasks[1]["id"] == tasks[0]["id"]
    assert tasks[3]["result"]["items"] == ["tool"] and tasks[3]["error"] is None
    assert tasks[5]["interrupts"][0]["value"] == {"question": "Go on?", "value": "greeted"}
    debug = [p.data for p in parts if p.event == "debug" and p.data["type"] != "checkpoint"]
    assert [(d["type"], d["payload"]) for d in debug] == [
        ("task" if "result" not in t else "task_result", t) for t in tasks]
    assert [d["step"] for d in debug[:4]] == [1, 1, 2, 2]
    after = [(p.data["name"], p.data.get("result")) for p in resumed if p.event == "tasks" and "result" in p.data]
    assert [name for name, _ in after] == ["ask", "sub"] and after[0][1]["items"] == ["asked"]


def test_its_checkpoints_stream_is_its_history_as_it_is_saved(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "stateful", input=START,
                                    stream_mode=["checkpoints", "debug"]))

    checkpoints = [p.data for p in parts if p.event == "checkpoints"]
    history = client.threads.get_history(thread["thread_id"], limit=50)
    assert [c["config"]["configurable"]["checkpoint_id"] for c in checkpoints] == [
        h["checkpoint"]["checkpoint_id"] for h in reversed(history)]  # each one saved, oldest first
    assert [c["metadata"]["step"] for c in checkpoints] == [h["metadata"]["step"] for h in reversed(history)]
    assert checkpoints[0]["metadata"]["source"] == "input" and checkpoints[-1]["next"] == ["ask"]
    assert checkpoints[-1]["values"]["items"] == ["greeted", "tool"]
    assert all(c["config"]["configurable"]["thread_id"] == thread["thread_id"] for c in checkpoints)
    assert [c["parent_config"]["configurable"]["checkpoint_id"] for c in checkpoints[1:]] == [
        c["config"]["configurable"]["checkpoint_id"] for c in checkpoints[:-1]]
    debug = [p.data for p in parts if p.event == "debug" and p.data["type"] == "checkpoint"]
    assert [d["payload"] for d in debug] == checkpoints
    assert [d["step"] for d in debug] == [c["metadata"]["step"] for c in checkpoints]

    other = client.threads.create()
    plain = list(client.runs.stream(other["thread_id"], "stateful", input=START, stream_mode=["values"]))
    assert plain[-1].event == "end"
    events = WorkflowExecution.objects.get(conversation_id=other["thread_id"]).events.values_list("event", flat=True)
    assert "values" in events and "checkpoints" not in events  # a run whose stream does not show them: not kept


def test_a_json_graphs_tasks_are_its_nodes(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "universal_chat", stream_mode="tasks",
                                    input={"messages": [{"role": "user", "content": "hello"}]}))

    ended = [p.data for p in parts if p.event == "tasks" and "result" in p.data]
    executed = NodeExecution.objects.filter(execution__conversation_id=thread["thread_id"]).order_by("index")
    assert [t["name"] for t in ended] == [n.node_id for n in executed] and ended
    assert all(t["result"]["status"] in ("completed", "skipped") and t["error"] is None for t in ended)


def test_a_thread_names_its_graph_and_static_breakpoints_hold(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create(metadata={"label": "mine"})

    stopped = client.runs.wait(thread["thread_id"], "stateful", input=START, interrupt_before=["use_tool"])

    assert stopped["items"] == ["greeted"]
    assert client.threads.get_state(thread["thread_id"])["next"] == ["use_tool"]
    metadata = client.threads.get(thread["thread_id"])["metadata"]
    assert metadata == {"label": "mine", "graph_id": "stateful", "assistant_id": "stateful"}
    assert [t["thread_id"] for t in client.threads.search(metadata={"graph_id": "stateful"})] == [
        thread["thread_id"]]


def assert_books_balance(thread_id) -> None:
    for execution in WorkflowExecution.objects.filter(conversation_id=thread_id).exclude(status="waiting"):
        assert_all(execution)
    assert reconcile_exit_code() == 0


@pytest.mark.parametrize("go_on", [{"input": None}, {"command": {"resume": "go"}}])
def test_a_run_stopped_at_a_static_breakpoint_ends_and_its_thread_waits_there(graph_server, alice_key, go_on):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    idle = client.threads.create()["thread_id"]

    stopped = client.runs.wait(tid, "stateful", input=START, interrupt_before=["use_tool"])

    # As LangGraph's server: the run succeeded, its answer is the state (no interrupt was asked), and the thread
    # waits at the checkpoint, `interrupted` with no interrupts, its next node the breakpoint's.
    assert stopped["items"] == ["greeted"] and "__interrupt__" not in stopped
    run = client.runs.list(tid)[0]
    assert run["status"] == "success" and client.runs.join(tid, run["run_id"]) == stopped
    thread = client.threads.get(tid)
    assert (thread["status"], thread["interrupts"], thread["values"]["items"]) == ("interrupted", {}, ["greeted"])
    state = client.threads.get_state(tid)
    assert state["next"] == ["use_tool"] and state["interrupts"] == []
    assert [(t["name"], t["interrupts"]) for t in state["tasks"]] == [("use_tool", [])]
    assert [t["thread_id"] for t in client.threads.search(status="interrupted")] == [tid]
    assert [t["thread_id"] for t in client.threads.search(status="idle")] == [idle]
    assert client.threads.count(status="interrupted") == 1 and client.threads.search(status="busy") == []
    execution = WorkflowExecution.objects.get(pk=run["run_id"])
    assert execution.status == "completed" and execution.output_data["next"] == ["use_tool"]

    went_on = client.runs.wait(tid, "stateful", **go_on)  # a new run, from the checkpoint, to the graph's question

    assert went_on["items"] == ["greeted", "tool"] and went_on["__interrupt__"][0]["value"]["question"] == "Go on?"
    runs = client.runs.list(tid)
    assert [r["status"] for r in runs] == ["interrupted", "success"] and runs[1]["run_id"] == run["run_id"]
    assert client.threads.get(tid)["interrupts"]["__root__"][0]["value"]["question"] == "Go on?"
    final = client.runs.wait(tid, "stateful", command={"resume": "yes"})
    assert final["items"] == ["greeted", "tool", "asked"]
    assert client.threads.get(tid)["status"] == "idle" and client.threads.search(status="interrupted") == []
    assert sorted(t["thread_id"] for t in client.threads.search(status="idle")) == sorted([tid, idle])
    assert [m.content for m in Message.objects.filter(conversation_id=tid).order_by("sequence")] == [
        "Hello there", "", "found x", "You said yes", "from the subgraph"]  # each message once, whichever run
    assert_books_balance(tid)


def test_a_breakpoint_compiled_into_the_graph_stops_its_runs_and_its_stream_says_so(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]

    parts = list(client.runs.stream(tid, "stateful_stopping", input=START, stream_mode=["updates", "values"]))

    assert [p.data for p in parts if p.event == "updates"][-1] == {"__interrupt__": []}  # as LangGraph streams it
    assert [p.data for p in parts if p.event == "values"][-1]["items"] == ["greeted"]
    assert parts[-1].event == "end" and client.runs.list(tid)[0]["status"] == "success"
    assert client.threads.get(tid)["status"] == "interrupted"
    assert client.threads.get_state(tid)["next"] == ["use_tool"]

    client.threads.update_state(tid, {"value": "changed"})  # the thread still stands there

    assert client.threads.get(tid)["status"] == "interrupted"
    went_on = client.runs.wait(tid, "stateful_stopping", input=None)
    assert went_on["value"] == "changed" and went_on["__interrupt__"][0]["value"] == {
        "question": "Go on?", "value": "changed"}
    assert_books_balance(tid)


def test_deleting_a_thread_whose_run_waits_cancels_the_run_and_forgets_the_graphs_state(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "stateful", input=START)  # waits at its question

    client.threads.delete(thread["thread_id"])

    execution = WorkflowExecution.objects.get()
    assert execution.status == "cancelled" and execution.conversation_id is None  # kept, with its figures
    again = client.threads.create(thread_id=thread["thread_id"])  # the same id, as clients choose theirs
    assert again["values"] == {"messages": []} and client.threads.get_state(thread["thread_id"])["next"] == []
    assert reconcile_exit_code() == 0


def test_a_users_assistant_on_a_graph_takes_the_graphs_own_context(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    mine = client.assistants.create("stateful", context={"tone": "dry"}, config={"configurable": {"team": "a"}},
                                    name="Mine")
    thread = client.threads.create()

    paused = client.runs.wait(thread["thread_id"], mine["assistant_id"], input=START)

    execution = WorkflowExecution.objects.get()
    assert paused["items"] == ["greeted", "tool"]
    assert execution.input_data["context"] == {"tone": "dry"}
    assert execution.input_data["configurable"] == {"team": "a"}
    assert client.threads.get(thread["thread_id"])["metadata"]["assistant_id"] == mine["assistant_id"]


def test_a_run_from_an_earlier_checkpoint_branches_the_thread(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "stateful", input=START)
    client.runs.wait(thread["thread_id"], "stateful", command={"resume": "yes"})
    history = client.threads.get_history(thread["thread_id"], limit=50)
    before_ask = next(h for h in history if h["next"] == ["ask"])  # the question is about to be asked

    again = client.runs.wait(thread["thread_id"], "stateful", input=None,
                             checkpoint_id=before_ask["checkpoint"]["checkpoint_id"])  # regenerate from there

    assert again["__interrupt__"][0]["value"]["question"] == "Go on?"  # asked again, on the new branch
    state = client.threads.get_state(thread["thread_id"])
    assert state["parent_checkpoint"]["checkpoint_id"] == before_ask["checkpoint"]["checkpoint_id"]
    final = client.runs.wait(thread["thread_id"], "stateful", command={"resume": "no"})
    assert final["items"] == ["greeted", "tool", "asked"] and final["messages"][-2]["content"] == "You said no"
    assert reconcile_exit_code() == 0
    import httpx

    with pytest.raises(httpx.HTTPStatusError) as missing:
        client.runs.wait(thread["thread_id"], "stateful", input=None, checkpoint_id="1f0-not-a-checkpoint")
    assert missing.value.response.status_code == 404


def test_a_subgraphs_parts_stream_only_when_asked(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    plain, nested = client.threads.create(), client.threads.create()
    for thread in (plain, nested):
        client.runs.wait(thread["thread_id"], "stateful", input=START)

    quiet = [p.event for p in client.runs.stream(plain["thread_id"], "stateful", command={"resume": "yes"},
                                                 stream_mode=["updates"])]
    loud = [p.event for p in client.runs.stream(nested["thread_id"], "stateful", command={"resume": "yes"},
                                                stream_mode=["updates"], stream_subgraphs=True)]

    assert not any("|" in event for event in quiet) and "updates" in quiet
    assert any(event.startswith("updates|sub:") for event in loud)


def test_a_subgraphs_values_and_tasks_stream_under_its_namespace_when_asked(graph_server, alice_key):
    import re

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    asked = {"input": {"messages": [{"role": "user", "content": "hi"}]}, "stream_mode": ["values", "tasks"]}

    def streamed(**options) -> list:
        thread = client.threads.create()
        return [(re.sub(r":[0-9a-f-]{36}", "", p.event), p.data)
                for p in client.runs.stream(thread["thread_id"], "nested", **asked, **options)]

    loud, quiet = streamed(stream_subgraphs=True), streamed()

    events = {event for event, _ in loud}
    assert {"values|middle", "values|middle|inner", "tasks|middle", "tasks|middle|inner"} <= events
    inner = [data for event, data in loud if event == "values|middle|inner"]
    assert inner[-1]["messages"][-1]["content"] == "from the inner graph"
    assert {data["name"] for event, data in loud if event == "tasks|middle|inner"} == {"leaf"}
    assert loud[-2][0] == "values" and loud[-2][1]["messages"][-1]["content"] == "from the inner graph"
    assert not any("|" in event for event, _ in quiet) and {"values", "tasks"} <= {event for event, _ in quiet}


def test_a_graphs_thread_before_its_first_checkpoint_reads_empty(graph_server, alice_key, settings, monkeypatch):
    """Read while its first run starts (a client's projections read the state at once): an empty state, not
    Chatter's chat state of some other graph (a race that answered 500)."""
    from agent_server.state import thread_state
    from core.env import env_graphs
    from conversations.models import Conversation
    from tests.agent_server.conftest import GRAPHS

    monkeypatch.setenv("CHATTER_GRAPHS", str(GRAPHS))
    settings.CHATTER_GRAPHS = env_graphs("CHATTER_GRAPHS")  # the state is read in this process

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "stateful", input=START)
    conversation = Conversation.objects.get(pk=thread["thread_id"])
    from workflows.models import Checkpoint

    Checkpoint.objects.filter(thread_id=thread["thread_id"]).delete()  # as it is before the run's first write

    state = thread_state(conversation=conversation)

    assert state["values"] == {} and state["checkpoint"]["checkpoint_id"] is None and state["next"] == []


def test_an_update_its_graph_refuses_is_a_422_and_changes_nothing(graph_server, alice_key):
    import httpx

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "stateful", input=START)  # stops at ask()
    before = client.threads.get_state(thread["thread_id"])

    # a list of updates, a reducer that cannot take the value, a message that is no message
    for values in ([{"value": "a"}, {"value": "b"}], {"items": "not-a-list"}, {"messages": [42]}):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            client.threads.update_state(thread["thread_id"], values)
        assert refused.value.response.status_code == 422, values
        assert "the state update was refused" in refused.value.response.json()["detail"]

    assert client.threads.get_state(thread["thread_id"])["checkpoint"] == before["checkpoint"]


def test_an_update_from_a_checkpoint_the_thread_does_not_have_is_a_404_and_keeps_its_state(graph_server, alice_key):
    import httpx

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "stateful", input=START)
    before = client.threads.get_state(thread["thread_id"])
    unknown = "1f000000-0000-6000-8000-000000000000"

    with pytest.raises(httpx.HTTPStatusError) as missing:
        client.threads.update_state(thread["thread_id"], {"value": "x"}, checkpoint_id=unknown)

    assert missing.value.response.status_code == 404
    after = client.threads.get_state(thread["thread_id"])
    assert after["checkpoint"] == before["checkpoint"] and len(after["values"]["messages"]) == 3
    updated = client.threads.update_state(thread["thread_id"], {"value": "x"},
                                          checkpoint_id=before["checkpoint"]["checkpoint_id"])
    assert client.threads.get_state(thread["thread_id"])["checkpoint"]["checkpoint_id"] == \
        updated["checkpoint"]["checkpoint_id"]


def test_a_runs_recursion_limit_bounds_its_graphs_steps(graph_server, alice_key):
    import httpx

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    stopped = client.runs.wait(thread["thread_id"], "stateful", input=START, config={"recursion_limit": 1},
                               raise_error=False)

    assert stopped["__error__"]["error"] == "GraphRecursionError"  # the exception, as the stock server names it
    assert "Recursion limit of 1 reached" in stopped["__error__"]["message"]
    assert client.runs.list(thread["thread_id"])[0]["status"] == "error"
    paused = client.runs.wait(thread["thread_id"], "stateful", input=START, config={"recursion_limit": 5})
    assert paused["__interrupt__"]  # greet, use_tool, then ask's question: within 5 steps
    for limit in (0, "ten", True):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            client.runs.wait(None, "stateful", input=START, config={"recursion_limit": limit})
        assert refused.value.response.status_code == 422
