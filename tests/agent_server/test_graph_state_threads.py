"""A thread of a Chatter graph (the built-in universal_chat) keeps the graph's own state, as a registered graph's
does: its runs run on the thread's LangGraph thread (its id), checkpointed every step with parents, the state going
on from run to run. Over the official langgraph-sdk against a real daphne server: history with parents, update_state
on messages seen by the next run, regenerate from the parent checkpoint of the last AI message (the thread then holds
that branch only), a turn of /api/v1/chat/ on the thread, a conversation of /api/v1/chat/ whose state begins with its
messages, and every message still saved with exact usage (I1–I3)."""
import httpx
import pytest
from langgraph_sdk import get_sync_client

from conversations.models import Conversation, Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from workflows.models import Checkpoint, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db(transaction=True)
OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
USAGE = {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}


def turn(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


def scripted_thread(server, stub, key: str, *answers: str):
    """A new thread of `key`'s and its client, the fake OpenAI server scripted to give these answers in turn."""
    for content in answers:
        stub.reply(content=content, usage=USAGE)
    client = get_sync_client(url=server.langgraph_url, api_key=key)
    return client, client.threads.create()["thread_id"]


def ask(client, thread_id, text: str | None, **run) -> dict:
    """A run of universal_chat on the thread, its model the fake OpenAI server's."""
    return client.runs.wait(thread_id, "universal_chat", input=turn(text) if text else None,
                            config={"configurable": OPENAI}, **run)


def assert_books_balance(thread_id) -> None:
    for execution in WorkflowExecution.objects.filter(conversation_id=thread_id):
        assert execution.status == "completed"
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_two_runs_make_one_history_of_checkpoints_each_with_its_parent(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]

    client.runs.wait(tid, "universal_chat", input=turn("What is 12*7?"))
    client.runs.wait(tid, "universal_chat", input=turn("What is 2+3?"))
    state = client.threads.get_state(tid)
    history = client.threads.get_history(tid, limit=100)

    first, second = WorkflowExecution.objects.filter(conversation_id=tid).order_by("created_at")
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert None not in ids and len(set(ids)) == len(ids) and ids == sorted(ids, reverse=True)
    assert [h["parent_checkpoint"]["checkpoint_id"] for h in history[:-1]] == ids[1:]  # one line: each on the last
    assert history[-1]["parent_checkpoint"] is None and history[0]["checkpoint"] == state["checkpoint"]
    assert {h["metadata"]["run_id"] for h in history} == {str(first.pk), str(second.pk)}
    assert [h["metadata"]["source"] for h in history].count("input") == 2  # each run's input went on the state
    messages = state["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"] * 2  # both turns, with their tool calls
    assert "84" in messages[3]["content"] and "5" in messages[7]["content"]
    stored = list(Message.objects.filter(conversation_id=tid).order_by("sequence"))
    assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [messages[0]["id"], messages[4]["id"]] == [str(stored[0].pk), str(stored[2].pk)]  # the turns' own
    assert client.threads.get(tid)["values"] == state["values"]
    assert_books_balance(tid)


def test_memory_gives_the_model_the_threads_earlier_messages_once(graph_server, openai_stub, alice_key):
    client, tid = scripted_thread(graph_server, openai_stub, alice_key, "Hello Ada.", "You are Ada.")

    ask(client, tid, "I am Ada.")
    ask(client, tid, "Who am I?")

    sent = [(m["role"], m["content"]) for m in openai_stub.requests[1].body["messages"] if m["role"] != "system"]
    assert sent == [("user", "I am Ada."), ("assistant", "Hello Ada."), ("user", "Who am I?")]
    reply = Message.objects.filter(conversation_id=tid, role="assistant").order_by("sequence").last()
    assert (reply.prompt_tokens, reply.completion_tokens) == (20, 4)
    assert_books_balance(tid)


def test_update_state_on_messages_is_seen_by_the_next_run(graph_server, openai_stub, alice_key):
    client, tid = scripted_thread(graph_server, openai_stub, alice_key, "Hello.", "Your name is Ada.")
    ask(client, tid, "Hi")

    updated = client.threads.update_state(tid, {"messages": [{"role": "user", "content": "My name is Ada."}]})
    at_update = client.threads.get_state(tid)
    ask(client, tid, "What is my name?")

    assert at_update["checkpoint"] == updated["checkpoint"] and at_update["metadata"]["source"] == "update"
    assert [m["content"] for m in at_update["values"]["messages"]] == ["Hi", "Hello.", "My name is Ada."]
    sent = [m["content"] for m in openai_stub.requests[1].body["messages"] if m["role"] != "system"]
    assert sent == ["Hi", "Hello.", "My name is Ada.", "What is my name?"]
    values = client.threads.get_state(tid)["values"]
    assert [m["content"] for m in values["messages"]][-2:] == ["What is my name?", "Your name is Ada."]
    # The conversation keeps what its runs produced (the update is the graph's state, not a turn).
    assert list(Message.objects.filter(conversation_id=tid).order_by("sequence").values_list("content", flat=True)) == [
        "Hi", "Hello.", "What is my name?", "Your name is Ada."]
    assert_books_balance(tid)


def test_regenerate_from_the_last_answers_parent_checkpoint_leaves_the_thread_on_the_new_branch(
        graph_server, openai_stub, alice_key):
    client, tid = scripted_thread(graph_server, openai_stub, alice_key, "One.", "Two.", "Two, again.")
    ask(client, tid, "First?")
    ask(client, tid, "Second?")
    old = client.threads.get_state(tid)["values"]["messages"][-1]
    # as agent-chat-ui finds it: the oldest checkpoint that holds the answer, and its parent
    holding = [h for h in client.threads.get_history(tid, limit=100)
               if old["id"] in [m["id"] for m in h["values"].get("messages", [])]]
    parent = holding[-1]["parent_checkpoint"]

    ask(client, tid, None, checkpoint=parent)

    state = client.threads.get_state(tid)
    contents = [m["content"] for m in state["values"]["messages"]]
    assert contents == ["First?", "One.", "Second?", "Two, again."] and old["id"] not in [
        m["id"] for m in state["values"]["messages"]]
    history = client.threads.get_history(tid, limit=100)
    assert history[0]["checkpoint"] == state["checkpoint"]
    line = {h["checkpoint"]["checkpoint_id"]: h["parent_checkpoint"] for h in history}
    at, chain = state["checkpoint"]["checkpoint_id"], []
    while at:  # the new branch goes back through the checkpoint it left from
        chain.append(at)
        at = (line[at] or {}).get("checkpoint_id")
    assert parent["checkpoint_id"] in chain and holding[-1]["checkpoint"]["checkpoint_id"] not in chain
    regenerated = WorkflowExecution.objects.filter(conversation_id=tid).order_by("created_at").last()
    stored = Message.objects.filter(conversation_id=tid).order_by("sequence")
    assert [(m.content, m.role) for m in stored][-1] == ("Two, again.", "assistant")
    assert stored.count() == 5 and stored.last().execution_id == regenerated.pk  # no user message of its own
    assert (regenerated.llm_calls, stored.last().total_tokens) == (1, 24)
    assert_books_balance(tid)


def test_a_turn_of_the_chat_api_on_a_thread_goes_on_from_its_state(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    client.runs.wait(tid, "universal_chat", input=turn("What is 12*7?"))
    headers = {"Authorization": f"Token {alice_key}"}

    answered = httpx.post(f"{server.base_url}/api/v1/chat/", json={"message": "What is 2+3?", "conversation_id": tid},
                          headers=headers, timeout=30)
    lean = httpx.post(f"{server.base_url}/api/v1/chat/", json={"message": "What is 2+3?"}, headers=headers,
                      timeout=30)

    assert answered.status_code == 201, answered.content
    messages = client.threads.get_state(tid)["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"] * 2 and "5" in messages[-1]["content"]
    assert len({h["metadata"]["run_id"] for h in client.threads.get_history(tid, limit=100)}) == 2
    # a conversation never run as a thread keeps no graph state: its turns save no checkpoint
    other = lean.json()["conversation"]["id"]
    assert not Checkpoint.objects.filter(execution__conversation_id=other).exists()
    assert not Checkpoint.objects.filter(thread_id=other).exists()
    assert Conversation.objects.get(pk=tid).message_count == 4
    assert_books_balance(tid)


def test_a_conversation_of_the_chat_api_run_as_a_thread_begins_its_state_with_its_messages(
        graph_server, openai_stub, alice, alice_key, settings):
    openai_stub.reply(content="Hello Ada.", usage=USAGE)
    openai_stub.reply(content="You are Ada.", usage=USAGE)
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_stub.base_url, "sk-test-not-a-real-key"  # (this process)
    earlier = execution_run_now(ChatRequest(owner=alice, message="I am Ada.", config=OPENAI))  # as /api/v1/chat/
    tid = str(earlier.conversation_id)
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    assert client.threads.get_state(tid)["checkpoint"]["checkpoint_id"] is None  # no graph state yet

    ask(client, tid, "Who am I?")

    sent = [(m["role"], m["content"]) for m in openai_stub.requests[1].body["messages"] if m["role"] != "system"]
    assert sent == [("user", "I am Ada."), ("assistant", "Hello Ada."), ("user", "Who am I?")]
    state = client.threads.get_state(tid)
    assert [m["content"] for m in state["values"]["messages"]] == ["I am Ada.", "Hello Ada.", "Who am I?",
                                                                   "You are Ada."]
    assert state["values"]["turn_start"] == 2 and state["parent_checkpoint"] is not None
    assert Conversation.objects.get(pk=tid).message_count == 4
    assert_books_balance(tid)


def test_edit_a_question_from_the_checkpoint_before_it_branches_the_thread(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    tid = client.threads.create()["thread_id"]
    client.runs.wait(tid, "universal_chat", input=turn("What is 12*7?"))
    client.runs.wait(tid, "universal_chat", input=turn("What is 2+3?"))
    question = client.threads.get_state(tid)["values"]["messages"][4]
    holding = [h for h in client.threads.get_history(tid, limit=100)
               if question["id"] in [m["id"] for m in h["values"].get("messages", [])]]

    client.runs.wait(tid, "universal_chat", input=turn("What is 3+3?"), checkpoint=holding[-1]["parent_checkpoint"])

    messages = client.threads.get_state(tid)["values"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"] * 2
    assert messages[4]["content"] == "What is 3+3?" and "6" in messages[-1]["content"]
    assert "What is 2+3?" not in [m["content"] for m in messages]
    assert Conversation.objects.get(pk=tid).message_count == 6  # the edit is a turn of its own
    assert_books_balance(tid)
