"""Where a registered graph's run must answer as LangGraph's stock server does (issue 43, items 1-5, 11, 12): an
empty context is a context, the assistant's subgraphs with their schemas, `events` as the graph's own
astream_events, `messages-tuple` as the graph's own message chunks, a DeltaChannel state read through the graph.
Through the official langgraph-sdk against a real daphne server (tests/agent_server/graphs/conformance.py)."""
import asyncio

import pytest
from langgraph_sdk import get_sync_client

from tests.agent_server.graphs import conformance

pytestmark = pytest.mark.django_db(transaction=True)
HI = {"messages": [{"role": "user", "content": "hi", "id": "user-1"}]}


def test_item_01_empty_context_reaches_the_graph_as_its_schema_defaults(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    result = client.runs.wait(thread["thread_id"], "context_graph", input={}, context={})
    threadless = client.runs.wait(None, "context_graph", input={}, context={"name": "you"})

    assert result == {"text": "hello, world"}
    assert threadless == {"text": "hello, you"}


def _local_events(graph, graph_input) -> list[dict]:
    async def collect():
        return [event async for event in graph.astream_events(graph_input, version="v2")]
    return asyncio.run(collect())


def test_item_03_events_are_the_graphs_own_astream_events(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "nested", input=HI, stream_mode="events"))

    events = [p.data for p in parts if p.event == "events"]
    local = _local_events(conformance.nested, HI)
    root = local[0]["run_id"]  # the graph's own stream (its values, updates) is the run's stream modes, as the
    # stock server streams it: its root on_chain_stream is not an event
    expected = [(e["event"], e["name"], e["metadata"].get("langgraph_node")) for e in local
                if not (e["event"] == "on_chain_stream" and e["run_id"] == root)]
    assert [(e["event"], e["name"], e["metadata"].get("langgraph_node")) for e in events] == expected
    streamed = [e for e in events if e["event"] == "on_chain_stream"]
    assert [e["name"] for e in streamed] == ["leaf", "inner", "middle"]
    assert streamed[0]["data"]["chunk"]["messages"][0]["content"] == "from the inner graph"
    assert all(e["run_id"] and isinstance(e["parent_ids"], list) for e in events)
    assert parts[-1].event == "end"


def test_item_04_messages_tuple_of_an_async_graph_carries_each_token_and_its_metadata(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    parts = list(client.runs.stream(thread["thread_id"], "async_agent", input=HI, stream_mode="messages-tuple"))

    chunks = [p.data for p in parts if p.event == "messages"]
    assert "".join(chunk["content"] for chunk, _ in chunks) == conformance.REPLY
    assert [chunk["content"] for chunk, _ in chunks] == ["the", " ", "quick", " ", "brown", " ", "fox"]
    assert all(chunk["type"] == "AIMessageChunk" and chunk["id"] == chunks[0][0]["id"] for chunk, _ in chunks)
    for _, metadata in chunks:
        assert metadata["langgraph_node"] == "agent" and metadata["langgraph_step"] == 1
        assert metadata["ls_provider"] == "genericfakechatmodel"
        assert metadata["thread_id"] == thread["thread_id"]
    final = client.threads.get_state(thread["thread_id"])["values"]["messages"][-1]
    assert final["content"] == conformance.REPLY and final["id"] == chunks[0][0]["id"]


def test_messages_mode_of_a_graph_is_each_message_so_far_then_those_returned_whole(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    streamed = list(client.runs.stream(thread["thread_id"], "async_agent", input=HI, stream_mode="messages"))

    partials = [p.data[0] for p in streamed if p.event == "messages/partial"]
    assert [m["content"] for m in partials] == ["the", "the ", "the quick", "the quick ", "the quick brown",
                                                "the quick brown ", conformance.REPLY]
    reply_id = partials[0]["id"]
    metadata = [p.data for p in streamed if p.event == "messages/metadata"]
    assert len(metadata) == 1 and metadata[0][reply_id]["metadata"]["langgraph_node"] == "agent"
    assert client.threads.get_state(thread["thread_id"])["values"]["messages"][-1]["id"] == reply_id

    other = client.threads.create()
    whole = list(client.runs.stream(other["thread_id"], "stateful", input={"messages": [], "value": "v"},
                                    stream_mode="messages"))
    complete = [p.data[0] for p in whole if p.event == "messages/complete"]
    assert [(m["type"], m["id"]) for m in complete] == [("ai", "greet-1"), ("ai", "tool-call-1"),
                                                         ("tool", "tool-result-1")]
    assert [p.event for p in whole].count("messages/metadata") == 3


def test_item_05_a_delta_channel_state_reads_as_the_graph_reads_it(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create(metadata={"case": "item-05"})

    client.runs.wait(thread["thread_id"], "delta_ledger", input={"entries": [], "total": 0})
    client.runs.wait(thread["thread_id"], "delta_ledger", input={"entries": [], "total": 0})

    expected = {"entries": ["entry 1", "entry 2"], "total": 2}
    assert client.threads.get(thread["thread_id"])["values"] == expected
    assert client.threads.get_state(thread["thread_id"])["values"] == expected
    found = client.threads.search(metadata={"case": "item-05"})
    assert [t["values"] for t in found] == [expected]
    assert client.runs.wait(None, "delta_ledger", input={"entries": ["given"], "total": 0}) == {
        "entries": ["given", "entry 2"], "total": 1}


def test_a_graph_that_raised_names_its_exceptions_class_and_message(graph_server, alice_key):
    """As the stock server serializes what a run raised: the stream's `error` event and the answer of wait and join
    name the exception's class and carry its text, not Chatter's internal_error."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    raised = {"error": "ValueError", "message": "asked to fail"}

    streamed = list(client.runs.stream(thread, "failing", input={"fail": True}))
    waited = client.runs.wait(thread, "failing", input={"fail": True}, raise_error=False)

    assert [(p.event, p.data) for p in streamed if p.event == "error"] == [("error", raised)]
    assert waited == {"__error__": raised}
    first = client.runs.list(thread)[-1]
    assert client.runs.join(thread, first["run_id"]) == {"__error__": raised}
    with pytest.raises(Exception, match="^ValueError: asked to fail$"):
        client.runs.wait(thread, "failing", input={"fail": True})


def test_item_12_mcp_tools_list_each_assistant_with_a_compact_input_schema(alice_key, settings, monkeypatch):
    import json

    from django.test import Client as DjangoClient
    from jsonschema import Draft202012Validator

    from core.env import env_graphs
    from tests.agent_server.conftest import GRAPHS

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("CHATTER_GRAPHS", str(GRAPHS))
    settings.CHATTER_GRAPHS = env_graphs("CHATTER_GRAPHS")  # (the graphs are loaded in this process)
    listed = DjangoClient().post("/langgraph/mcp", data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                                 content_type="application/json",
                                 headers={"x-api-key": alice_key, "accept": "application/json, text/event-stream"})

    tools = {tool["name"]: tool for tool in listed.json()["result"]["tools"]}
    assert {"calculator_agent", "async_agent", "context_graph", "universal_chat"} <= set(tools)
    assert len(listed.content) < 1500 * len(tools)  # (each messages graph's was 20 KB: every message class in full)
    agent = tools["calculator_agent"]
    assert set(agent) == {"name", "title", "description", "inputSchema", "_meta"}
    assert len(json.dumps(agent)) < 1500 and set(agent["inputSchema"]["properties"]) == {"messages"}
    validator = Draft202012Validator(agent["inputSchema"])
    assert validator.is_valid({"messages": [{"role": "user", "content": "What is 12*7?"}]})
    assert not validator.is_valid({"messages": [{"role": "user"}]}) and not validator.is_valid({"messages": "hi"})
    assert tools["context_graph"]["inputSchema"]["properties"] == {"text": {"title": "Text", "type": "string"}}


def test_item_02_subgraphs_answer_each_namespace_with_its_schemas(graph_server, alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)

    top = client.assistants.get_subgraphs("nested")
    every = client.assistants.get_subgraphs("nested", recurse=True)
    one = client.assistants.get_subgraphs("nested", namespace="middle")
    none = client.assistants.get_subgraphs("nested", namespace="nope")

    assert list(every) == [name for name, _ in conformance.nested.get_subgraphs(recurse=True)] == [
        "middle", "middle|inner"]
    assert list(top) == list(one) == ["middle"] and none == {}
    inner = dict(conformance.nested.get_subgraphs(recurse=True))["middle|inner"]
    assert every["middle|inner"]["input_schema"] == inner.get_input_jsonschema()
    assert every["middle|inner"]["output_schema"] == inner.get_output_jsonschema()
    assert set(every["middle"]) >= {"input_schema", "output_schema", "state_schema", "config_schema",
                                    "context_schema"}
    assert "messages" in every["middle"]["state_schema"]["properties"]
    assert client.assistants.get_subgraphs("async_agent") == {}
    assert client.assistants.get_subgraphs("universal_chat") == {}


def test_item_11_a_server_runtime_factory_is_refused_in_the_apis_json_error_shape(graph_server, alice_key):
    """No public langgraph / langgraph-sdk name makes a ServerRuntime (docs/api/langgraph.md says why): a factory
    asking for one is refused, by name, as a JSON 422, wherever it is named; nothing is written."""
    import httpx

    from agent_server.models import Assistant
    from workflows.models import WorkflowExecution

    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    for attempt in (lambda: client.runs.wait(None, "runtime_factory", input={}),
                    lambda: client.assistants.create(graph_id="runtime_factory", name="needs a runtime")):
        with pytest.raises(httpx.HTTPStatusError) as refused:
            attempt()
        response = refused.value.response
        assert response.status_code == 422 and response.headers["content-type"].startswith("application/json")
        assert [e["code"] for e in response.json()["errors"]] == ["unsupported_factory"]
        assert "ServerRuntime" in response.json()["detail"]
    assert not WorkflowExecution.objects.exists() and not Assistant.objects.exists()
