"""Python graphs of your own (CHATTER_GRAPHS) as assistants: run as they are through the official langgraph-sdk
against a real daphne server: each of the graph's nodes is a node row, each message it produces is in the thread's
conversation with the usage of the model call that produced it (ChatOpenAI on the fake OpenAI server), tool calls
in the trail; the same graph run through /api/v1/ gives the same accounting; an unpriced model is recorded with
its tokens and flagged, not refused."""
from decimal import Decimal

import httpx
import pytest
from langgraph_sdk import get_sync_client

from agent_server.assistants import RegisteredGraph
from tests.agent_server.conftest import GRAPHS, reconcile_exit_code
from tests.invariants import assert_all
from workflows.models import LLMCall, NodeExecution, ToolCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}
# gpt-4o-mini's seeded price: 0.15 in, 0.60 out per million; (50 + 80) in, (10 + 6) out.
EXPECTED = {"prompt_tokens": 130, "completion_tokens": 16, "total_tokens": 146, "cost": Decimal("0.00002910"),
            "llm_calls": 2, "tool_calls": 1}


def script_turn(stub, model="gpt-4o-mini") -> None:
    stub.reply(tool_calls=[{"name": "multiply", "arguments": {"a": 12, "b": 7}}], model=model,
               usage={"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60})
    stub.reply(content="12*7 = 84", model=model,
               usage={"prompt_tokens": 80, "completion_tokens": 6, "total_tokens": 86})


def figures(execution) -> dict:
    return {name: getattr(execution, name) for name in EXPECTED}


def test_a_python_graph_is_an_assistant_and_its_calls_are_accounted(graph_server, openai_stub, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_turn(openai_stub)

    found = {a["graph_id"] for a in client.assistants.search(limit=100)}
    drawn = client.assistants.get_graph("calculator_agent")
    thread = client.threads.create()
    values = client.runs.wait(thread["thread_id"], "calculator_agent", input=TURN)

    assert {"calculator_agent", "house_agent", "universal_chat"} <= found
    assert {"agent", "tools"} <= {node["id"] for node in drawn["nodes"]}
    assert values["messages"][-1]["content"] == "12*7 = 84"
    execution = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    assert execution.status == "completed" and figures(execution) == EXPECTED
    calls = list(LLMCall.objects.filter(execution=execution).order_by("created_at"))
    assert [(c.provider, c.model, c.unpriced, c.total_tokens) for c in calls] == [
        ("openai", "gpt-4o-mini", False, 60), ("openai", "gpt-4o-mini", False, 86)]
    tool = ToolCall.objects.get(execution=execution)
    assert tool.tool == "multiply" and tool.ok and "84" in tool.result
    nodes = NodeExecution.objects.filter(execution=execution).order_by("index")
    assert [(n.node_id, n.node_type, n.total_tokens, n.llm_calls, n.tool_calls) for n in nodes] == [
        ("agent", "graph_node", 60, 1, 0), ("tools", "graph_node", 0, 0, 1), ("agent", "graph_node", 86, 1, 0)]
    stored = execution.conversation.messages.order_by("sequence")
    assert [(m.role, m.total_tokens) for m in stored] == [("user", 0), ("assistant", 60), ("tool", 0),
                                                         ("assistant", 86)]
    assert stored.last().content == "12*7 = 84" and stored[1].tool_calls[0]["name"] == "multiply"
    assert values["messages"][-1]["usage_metadata"]["total_tokens"] == 86
    assert client.runs.get(thread["thread_id"], str(execution.pk))["assistant_id"] == "calculator_agent"
    assert_all(execution)

    # The same graph through /api/v1/: the same run, the same accounting.
    script_turn(openai_stub)
    token = {"Authorization": f"Token {alice_key}"}
    conversation = httpx.post(f"{graph_server.base_url}/api/v1/conversations/", json={"title": "v1"},
                              headers=token).json()
    response = httpx.post(f"{graph_server.base_url}/api/v1/executions/", headers=token, timeout=60, json={
        "graph": RegisteredGraph("calculator_agent").as_graph(), "input": {"message": "What is 12*7?"},
        "conversation_id": conversation["id"], "mode": "sync"})
    assert response.status_code == 201, response.text
    through_v1 = WorkflowExecution.objects.get(pk=response.json()["execution"]["id"])
    assert figures(through_v1) == EXPECTED
    assert_all(through_v1)
    assert reconcile_exit_code() == 0


@pytest.mark.parametrize("usage", [{}, None], ids=["an empty usage object", "no usage"])
def test_a_streamed_call_whose_upstream_counts_nothing_is_booked_by_estimate(graph_server, openai_stub, alice_key,
                                                                             usage):
    """LangChain's ChatOpenAI, streaming, reads an upstream's empty usage chunk (`{}`) as zero tokens: the call was
    booked at zero and not flagged. A call its upstream reports no count for is booked by the estimate of its prompt
    and reply, flagged `estimated`, as every other path books it."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    openai_stub.reply(content="Twelve sevens are eighty-four.", usage=usage)
    thread = client.threads.create()

    values = client.runs.wait(thread["thread_id"], "streaming_agent", input=TURN)

    assert values["messages"][-1]["content"] == "Twelve sevens are eighty-four."
    execution = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and call.prompt_tokens > 0 and call.completion_tokens > 0
    assert (execution.total_tokens, execution.cost) == (call.total_tokens, call.cost) and call.cost > 0
    assert_all(execution)


def test_its_streamed_messages_carry_the_ids_of_its_state(graph_server, openai_stub, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_turn(openai_stub)  # its model is called whole (invoke): each reply streams as one piece
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "calculator_agent", input=TURN,
                                    stream_mode=["messages-tuple", "messages"]))

    state = client.threads.get_state(thread["thread_id"])["values"]["messages"]
    asked, answered = [m for m in state if m["type"] == "ai"]
    assert asked["tool_calls"][0]["name"] == "multiply" and asked["content"] == ""
    # LangGraph's own chunks, as the stock server streams them: each model call's as it streamed, and the tool's
    # message whole, each under its message's id in the state
    chunks = [p.data[0] for p in parts if p.event == "messages"]
    assert list(dict.fromkeys(c["id"] for c in chunks)) == [m["id"] for m in state if m["type"] != "human"]
    assert [t["name"] for c in chunks if c["id"] == asked["id"] for t in c["tool_call_chunks"] if t["name"]] == [
        "multiply"]
    assert "".join(c["content"] for c in chunks if c["id"] == answered["id"]) == "12*7 = 84"
    assert [c.get("chunk_position") for c in chunks if c["id"] == answered["id"]][-1] == "last"
    # and `messages` as the stock server gives it: each model call's message so far, the tool's message complete
    so_far = {p.data[0]["id"]: p.data[0] for p in parts if p.event == "messages/partial"}
    assert so_far[asked["id"]]["tool_calls"][0]["name"] == "multiply"
    assert so_far[answered["id"]]["content"] == "12*7 = 84"
    complete = [p.data[-1] for p in parts if p.event == "messages/complete"]
    tool = next(m for m in state if m["type"] == "tool")
    assert [(c["id"], c["type"], c["content"]) for c in complete] == [(tool["id"], "tool", tool["content"])]


def test_a_model_without_a_price_is_recorded_and_flagged_not_refused(graph_server, openai_stub, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_turn(openai_stub, model="house-model-7")

    parts = list(client.runs.stream(None, "house_agent", input=TURN, stream_mode=["values"]))

    execution = WorkflowExecution.objects.get()
    assert parts[-1].event == "end" and execution.status == "completed"
    assert parts[-2].data["messages"][-1]["content"] == "12*7 = 84"
    assert execution.total_tokens == 146 and execution.cost == 0 and execution.llm_calls == 2
    calls = LLMCall.objects.filter(execution=execution).order_by("created_at")
    assert [(c.provider, c.model, c.unpriced, c.total_tokens) for c in calls] == [
        ("openai", "house-model-7", True, 60), ("openai", "house-model-7", True, 86)]
    assert_all(execution)


def test_a_graph_naming_an_unregistered_python_graph_is_invalid(settings):
    from engine.graph import validate_graph

    settings.CHATTER_GRAPHS = {"calculator_agent": (str(GRAPHS.parent / "agent.py"), "graph")}

    assert validate_graph(RegisteredGraph("calculator_agent").as_graph()) == []
    errors = validate_graph(RegisteredGraph("nobody").as_graph())
    assert [(e["path"], e["code"]) for e in errors] == [("nodes[1].config.graph", "unknown_graph")]


def test_a_call_whose_end_finds_the_database_out_of_reach_is_still_booked(api, openai_stub, settings, monkeypatch):
    """The graph's model's price is read as each call starts, so a call's end reads nothing: here the database
    refuses the price's read from the moment the model is asked (as when it is down for longer than the pool's
    timeout), and both calls made are booked all the same."""
    from django.db import OperationalError, connection

    from core.cache import hot_reads

    settings.CHATTER_GRAPHS = {"calculator_agent": (str(GRAPHS.parent / "agent.py"), "calculator_graph")}
    monkeypatch.setenv("OPENAI_BASE_URL", openai_stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    script_turn(openai_stub)
    hot_reads.forget()  # this process has not read the graph's model's price yet (the run's own is another model)

    def unreachable_once_asked(execute, sql, params, many, context):
        if openai_stub.requests and "analytics_modelprice" in sql:
            raise OperationalError("couldn't get a connection after 30.00 sec")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(unreachable_once_asked):
        response = api.post("/api/v1/executions/", {"graph": RegisteredGraph("calculator_agent").as_graph(),
                                                    "input": {"message": "What is 12*7?"}, "mode": "sync"},
                            format="json")

    assert response.status_code == 201, response.content
    execution = WorkflowExecution.objects.get(pk=response.json()["execution"]["id"])
    assert (execution.status, execution.error_message) == ("completed", "")
    assert figures(execution) == EXPECTED
    assert len(openai_stub.requests) == 2
    assert_all(execution)


def test_the_runs_tool_call_limit_holds_inside_a_python_graph(graph_server, openai_stub, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    script_turn(openai_stub)

    values = client.runs.wait(None, "calculator_agent", input=TURN, config={"configurable": {"max_tool_calls": 0}},
                              raise_error=False)

    execution = WorkflowExecution.objects.get()
    assert values["__error__"]["error"] == "limit_exceeded"
    assert execution.status == "failed" and execution.error_type == "limit_exceeded"
    assert execution.llm_calls == 1 and execution.total_tokens == 60 and execution.tool_calls == 0  # kept (I5)
    assert_all(execution)


def test_a_registered_graphs_schemas_are_its_own(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)

    schemas = client.assistants.get_schemas("calculator_agent")

    assert schemas["graph_id"] == "calculator_agent"
    assert "messages" in schemas["input_schema"]["properties"]
    assert schemas["input_schema"] != client.assistants.get_schemas("universal_chat")["input_schema"]


def test_a_registered_graphs_state_schema_is_its_whole_state_not_its_output(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)

    schemas = client.assistants.get_schemas("narrow_io")

    assert list(schemas["input_schema"]["properties"]) == ["question"]
    assert list(schemas["output_schema"]["properties"]) == ["answer"]
    assert sorted(schemas["state_schema"]["properties"]) == ["answer", "question", "scratch"]
    assert schemas["state_schema"]["properties"]["scratch"]["type"] == "string"
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "narrow_io", input={"question": "hi"})
    assert sorted(client.threads.get_state(thread["thread_id"])["values"]) == sorted(
        schemas["state_schema"]["properties"])
