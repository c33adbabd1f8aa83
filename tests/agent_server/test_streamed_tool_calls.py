"""A template's or definition's run that calls tools streams what LangGraph's stock server streams for such a graph,
through the official langgraph-sdk against a real daphne server: the model's tool calls as `tool_call_chunks`, so
the chunks merged as LangChain (and the JS SDK, agent-chat-ui) merge them give the reply's tool calls before the
run's last values, and each tool's message whole, as one chunk, with the id and tool_call_id the thread's state
gives it; the `messages` and `events` modes name the same calls. A run that calls no tool streams as it did."""
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import add_ai_message_chunks
from langgraph_sdk import get_sync_client

from tests.agent_server.test_graph_state_threads import USAGE, turn
from tests.factories import WorkflowDefinitionFactory

pytestmark = pytest.mark.django_db(transaction=True)
OPENAI = {"configurable": {"provider": "openai", "model": "gpt-4o-mini"}}
AGENT = {  # start → model → tools (when it asks for them) → model → end
    "nodes": [{"id": "start", "type": "start"}, {"id": "model", "type": "model"}, {"id": "tools", "type": "tools"},
              {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "model"},
              {"source": "model", "target": "tools", "condition": "has_tool_calls"},
              {"source": "model", "target": "end"}, {"source": "tools", "target": "model"}],
}


def merged(chunks: list[dict]) -> dict[str, AIMessageChunk]:
    """The AI chunks of a messages-tuple stream merged per message id, as a client adds them up."""
    by_id: dict[str, list[AIMessageChunk]] = {}
    for chunk in chunks:
        if chunk["type"] == "AIMessageChunk":
            by_id.setdefault(chunk["id"], []).append(AIMessageChunk.model_validate(chunk))
    return {key: add_ai_message_chunks(*pieces) for key, pieces in by_id.items()}


def test_merged_chunks_of_a_definitions_tool_calls_are_its_states_messages(server, alice, alice_key):
    definition = WorkflowDefinitionFactory(owner=alice, **AGENT)
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]

    parts = list(client.runs.stream(tid, f"definition-{definition.pk}", input=turn("What is 12*7?"),
                                    stream_mode=["messages-tuple", "values", "updates"]))

    _, asked, told, answered = client.threads.get_state(tid)["values"]["messages"]
    streamed = [p.data for p in parts if p.event == "messages"]
    replies = merged([chunk for chunk, _ in streamed])
    assert asked["tool_calls"][0]["name"] == "calculator" and asked["tool_calls"][0]["args"] == {"expression": "12*7"}
    assert replies[asked["id"]].tool_calls == asked["tool_calls"]
    assert replies[answered["id"]].tool_calls == [] and replies[answered["id"]].content == answered["content"]
    tools = [(chunk, meta) for chunk, meta in streamed if chunk["type"] == "tool"]
    assert [chunk for chunk, _ in tools] == [told] and told["tool_call_id"] == asked["tool_calls"][0]["id"]
    assert tools[0][1]["langgraph_node"] == "tools" and tools[0][1]["thread_id"] == tid
    order = [chunk["id"] for chunk, _ in streamed]  # the call, then its result, then the answer
    assert max(i for i, key in enumerate(order) if key == asked["id"]) < order.index(told["id"]) < order.index(
        answered["id"])
    assert [p.event for p in parts][-1] == "end"


def test_a_models_tool_calls_streamed_in_pieces_merge_and_every_mode_names_them(graph_server, openai_stub,
                                                                                alice_key):
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    openai_stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}},
                                  {"name": "calculator", "arguments": {"expression": "6*7"}}],
                      argument_chunk_chars=4, usage=USAGE)
    openai_stub.reply(content="They are 84 and 42.", usage=USAGE)

    parts = list(client.runs.stream(tid, "universal_chat", input=turn("What are 12*7 and 6*7?"), config=OPENAI,
                                    stream_mode=["messages-tuple", "messages", "events"]))

    messages = client.threads.get_state(tid)["values"]["messages"]
    asked, answered = [m for m in messages if m["type"] == "ai"]
    told = [m for m in messages if m["type"] == "tool"]
    assert [call["args"] for call in asked["tool_calls"]] == [{"expression": "12*7"}, {"expression": "6*7"}]
    chunks = [p.data[0] for p in parts if p.event == "messages"]
    assert sum(1 for c in chunks if c["id"] == asked["id"] and c["tool_call_chunks"]) > 2  # the pieces, as sent
    assert merged(chunks)[asked["id"]].tool_calls == asked["tool_calls"]
    assert [c for c in chunks if c["type"] == "tool"] == told
    assert [t["tool_call_id"] for t in told] == [call["id"] for call in asked["tool_calls"]]
    complete = {m["id"]: m for p in parts if p.event == "messages/complete" for m in p.data}
    assert complete[asked["id"]]["tool_calls"] == asked["tool_calls"] and complete[answered["id"]]["tool_calls"] == []
    assert [complete[t["id"]] for t in told] == told
    partial = [m for p in parts if p.event == "messages/partial" for m in p.data if m["id"] == asked["id"]]
    assert partial[-1]["tool_calls"] == asked["tool_calls"]
    events = [p.data for p in parts if p.event == "events"]
    ends = [e["data"]["output"] for e in events if e["event"] == "on_chat_model_end"]
    assert [end["tool_calls"] for end in ends] == [asked["tool_calls"], []]
    streamed = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert merged(streamed)[asked["id"]].tool_calls == asked["tool_calls"]
    tool_ends = [e["data"]["output"] for e in events if e["event"] == "on_tool_end"]
    assert [(end["call_id"], end["message_id"], end["content"]) for end in tool_ends] == [
        (t["tool_call_id"], t["id"], t["content"]) for t in told]


def test_a_run_that_calls_no_tool_streams_its_text_alone(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]

    parts = list(client.runs.stream(tid, "universal_chat", input=turn("hello"),
                                    stream_mode=["messages-tuple", "messages"]))

    _, reply = client.threads.get_state(tid)["values"]["messages"]
    chunks = [p.data[0] for p in parts if p.event == "messages"]
    assert {c["type"] for c in chunks} == {"AIMessageChunk"} and {c["id"] for c in chunks} == {reply["id"]}
    assert all(c["tool_calls"] == c["tool_call_chunks"] == c["invalid_tool_calls"] == [] for c in chunks)
    assert "".join(c["content"] for c in chunks) == reply["content"] and reply["tool_calls"] == []
    assert [c.get("chunk_position") for c in chunks].count("last") == 1 and chunks[-1]["usage_metadata"]
    complete = [m for p in parts if p.event == "messages/complete" for m in p.data]
    assert [(m["id"], m["content"], m["tool_calls"]) for m in complete] == [(reply["id"], reply["content"], [])]
