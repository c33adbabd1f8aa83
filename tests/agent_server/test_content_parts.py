"""A message whose content is a list of parts (OpenAI's text and image_url, a model's or a tool's content blocks)
through /langgraph/: every place that needs its text reads it as a model does (engine.chat_messages.content_text:
the text parts one after the other, as they are, each other part named on a line of its own, `[image_url]`), so the
stored message, what the model read, the usage it was billed and the thread's state read back agree."""
import json
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from conversations.models import Message
from tests.invariants import assert_all
from workflows.models import ToolCall, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
PARTS = [{"type": "text", "text": "Describe"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
         {"type": "text", "text": "this picture"}]
TEXT = "Describe\n[image_url]\nthis picture"  # the parts as a model reads them
GRAPHS = Path(__file__).parent / "graphs"


def langgraph(key: str, method: str, path: str, body: dict | None = None) -> dict:
    sent = {"data": json.dumps(body or {}), "content_type": "application/json"} if method == "post" else {}
    response = getattr(Client(), method)(f"/langgraph{path}", headers={"x-api-key": key}, **sent)
    assert response.status_code == 200, response.content
    return json.loads(b"".join(response.streaming_content) if response.streaming else response.content)


def turn_on_a_thread(key: str, assistant: str, content) -> tuple[str, dict]:
    thread = langgraph(key, "post", "/threads")["thread_id"]
    values = langgraph(key, "post", f"/threads/{thread}/runs/wait",
                       {"assistant_id": assistant, "input": {"messages": [{"role": "user", "content": content}]}})
    return thread, values


def test_a_chatter_graphs_turn_stores_reads_and_bills_the_parts_as_their_text(alice_key):
    thread, values = turn_on_a_thread(alice_key, "universal_chat", PARTS)
    twin, twin_values = turn_on_a_thread(alice_key, "universal_chat", TEXT)  # the same turn given as text

    execution = WorkflowExecution.objects.get(conversation_id=thread)
    question, reply = Message.objects.filter(execution=execution).order_by("sequence")
    assert question.content == TEXT and f'You said: "{TEXT}"' in reply.content  # what the model read
    state = langgraph(alice_key, "get", f"/threads/{thread}/state")["values"]
    assert [m["content"] for m in state["messages"]] == [TEXT, reply.content] == [
        m["content"] for m in values["messages"]]
    twins = WorkflowExecution.objects.get(conversation_id=twin)
    assert (execution.prompt_tokens, execution.completion_tokens) == (twins.prompt_tokens, twins.completion_tokens)
    assert state["messages"][-1]["usage_metadata"]["input_tokens"] == reply.prompt_tokens == execution.prompt_tokens
    assert [m["content"] for m in twin_values["messages"]] == [TEXT, reply.content]
    assert_all(execution)


def test_a_content_list_with_a_part_that_is_no_part_is_refused(alice_key):
    thread = langgraph(alice_key, "post", "/threads")["thread_id"]
    response = Client().post(f"/langgraph/threads/{thread}/runs/wait", json.dumps(
        {"assistant_id": "universal_chat", "input": {"messages": [{"role": "user", "content": ["Hi", 7]}]}}),
        content_type="application/json", headers={"x-api-key": alice_key})

    assert response.status_code == 422 and "content parts" in response.json()["detail"]
    assert not WorkflowExecution.objects.exists() and not Message.objects.exists()


@pytest.fixture
def parts_graphs(settings, monkeypatch, openai_server):
    settings.CHATTER_GRAPHS = {"parts_agent": (str(GRAPHS / "content_parts.py"), "graph"),
                               "calculator_agent": (str(GRAPHS / "agent.py"), "calculator_graph")}
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    return openai_server


def test_a_registered_graph_is_given_the_parts_and_its_thread_stores_their_text(alice_key, parts_graphs):
    parts_graphs.reply(content="A cat on a mat.", usage={"prompt_tokens": 90, "completion_tokens": 6,
                                                         "total_tokens": 96})

    thread, values = turn_on_a_thread(alice_key, "calculator_agent", PARTS)

    assert parts_graphs.requests[0].body["messages"][0]["content"] == PARTS  # the graph's own input, as given
    execution = WorkflowExecution.objects.get(conversation_id=thread)
    question, reply = Message.objects.filter(execution=execution).order_by("sequence")
    assert (question.content, reply.content) == (TEXT, "A cat on a mat.")
    assert (reply.prompt_tokens, reply.completion_tokens) == (90, 6) == (execution.prompt_tokens,
                                                                         execution.completion_tokens)
    state = langgraph(alice_key, "get", f"/threads/{thread}/state")["values"]
    assert state == values and state["messages"][0]["content"] == PARTS  # the graph's state keeps its parts
    assert state["messages"][1]["usage_metadata"]["input_tokens"] == 90
    assert_all(execution)


async def streamed(key: str, path: str, body: dict) -> list[tuple[str, object]]:
    """A run streamed over /langgraph/ (server-sent events), as (event, data) pairs."""
    response = await AsyncClient().post(f"/langgraph{path}", json.dumps(body), content_type="application/json",
                                        headers={"x-api-key": key})
    assert response.status_code == 200
    text = b"".join([chunk async for chunk in response.streaming_content]).decode()
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"]) if fields.get("data") else None))
    return events


async def test_a_registered_graphs_replies_and_tool_results_in_parts_are_stored_and_streamed_as_text(
        alice_key, parts_graphs):
    thread = (await sync_to_async(langgraph)(alice_key, "post", "/threads"))["thread_id"]

    events = await streamed(alice_key, f"/threads/{thread}/runs/stream", {
        "assistant_id": "parts_agent", "input": {"messages": [{"role": "user", "content": "Draw the chart."}]},
        "stream_mode": ["values", "messages"]})

    await sync_to_async(check_parts_run)(thread, events)


def check_parts_run(thread: str, events: list) -> None:
    execution = WorkflowExecution.objects.get(conversation_id=thread)
    assert execution.status == "completed", execution.error_message
    stored = [(m.role, m.content) for m in Message.objects.filter(execution=execution).order_by("sequence")]
    assert stored == [("user", "Draw the chart."), ("assistant", "Let me draw it."),
                      ("tool", "a bar chart\n[image]"), ("assistant", "Here is the chart.")]
    assert execution.output_data["content"] == "Here is the chart."
    assert ToolCall.objects.get(execution=execution).result == "a bar chart\n[image]"  # not the image's data
    # `messages` is the graph's own stream, as the stock server's: each message whole as the graph made it (its parts)
    completed = [data[0] for event, data in events if event == "messages/complete"]
    assert [m["type"] for m in completed] == ["ai", "tool", "ai"]
    assert [(m["content"][0]["text"], m["usage_metadata"]["input_tokens"]) for m in completed if m["type"] == "ai"] == [
        ("Let me draw it.", 30), ("Here is ", 60)]
    assert completed[1]["content"][0] == {"type": "text", "text": "a bar chart"}
    assert (execution.prompt_tokens, execution.completion_tokens) == (90, 12)
    assert [m.prompt_tokens for m in Message.objects.filter(execution=execution, role="assistant")
            .order_by("sequence")] == [30, 60]
    values = [data for event, data in events if event == "values"][-1]
    assert values["messages"][-1]["content"] == [{"type": "text", "text": "Here is "},
                                                 {"type": "text", "text": "the chart."}]  # the graph's own state
    assert_all(execution)
