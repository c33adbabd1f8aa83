"""Threads over the official langgraph-sdk: a thread is a conversation (the same row as /api/v1/conversations/),
its state the conversation's messages in LangGraph's format; another user's thread is a 404."""
import asyncio
import re
import uuid

import httpx
import pytest
from asgiref.sync import sync_to_async
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from agent_server.thread_stream import HEARTBEAT_S
from conversations.models import Conversation, Message
from tests.invariants import assert_i1

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}


def test_a_thread_is_a_conversation(server, alice, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    chosen = str(uuid.uuid4())

    thread = client.threads.create(thread_id=chosen, metadata={"title": "Sums", "team": "a"})
    again = client.threads.create(thread_id=chosen, if_exists="do_nothing")

    conversation = Conversation.objects.get(pk=chosen)
    assert thread["thread_id"] == again["thread_id"] == chosen and thread["status"] == "idle"
    assert conversation.owner == alice and conversation.title == "Sums" and conversation.metadata["team"] == "a"
    assert thread["values"] == {"messages": []}
    with pytest.raises(ConflictError):
        client.threads.create(thread_id=chosen)
    # and the same thread over /api/v1/
    seen = httpx.get(f"{server.base_url}/api/v1/conversations/{chosen}/",
                     headers={"Authorization": f"Token {alice_key}"})
    assert seen.status_code == 200 and seen.json()["title"] == "Sums"


def test_thread_metadata_is_merged_searched_and_counted(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    first = client.threads.create(metadata={"team": "a", "n": 1})
    second = client.threads.create(metadata={"team": "b"})

    updated = client.threads.update(first["thread_id"], metadata={"n": 2})

    assert updated["metadata"] == {"team": "a", "n": 2}
    assert [t["thread_id"] for t in client.threads.search(metadata={"team": "b"})] == [second["thread_id"]]
    assert [t["thread_id"] for t in client.threads.search(ids=[first["thread_id"]])] == [first["thread_id"]]
    assert client.threads.count() == 2 and client.threads.count(metadata={"team": "a"}) == 1
    assert {t["thread_id"] for t in client.threads.search(status="idle")} == {first["thread_id"],
                                                                             second["thread_id"]}


def test_a_search_selects_the_fields_it_names_and_what_chatter_cannot_honour_is_refused(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create(metadata={"team": "a"})

    found = client.threads.search(select=["thread_id", "status"])

    assert found == [{"thread_id": thread["thread_id"], "status": "idle"}]
    for refused in ({"select": ["thread_id", "no_such_field"]}, {"extract": {"last": "values.messages[-1]"}}):
        with pytest.raises(UnprocessableEntityError):
            client.threads.search(**refused)
    with pytest.raises(UnprocessableEntityError) as pruning:  # refused as the stock server's checkpointer does
        client.threads.create(ttl={"ttl": 5, "strategy": "keep_latest"})
    assert "keep_latest" in pruning.value.response.text and Conversation.objects.count() == 1


def test_a_thread_with_a_ttl_is_deleted_by_the_sweep_once_it_has_passed(server, alice_key, bob_key):
    """threads.create(ttl=minutes) and threads.update(ttl=…), as the SDK sends them: the thread is deleted once its
    ttl has passed from its creation or its last update with one, by the sweep of every minute (its django-q2
    schedule), as threads.delete deletes it; GET with include=ttl shows it."""
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from agent_server.tasks import EXPIRY_SCHEDULE_NAME
    from agent_server.threads import threads_expired_delete

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    short = client.threads.create(ttl=1)["thread_id"]
    longer = client.threads.create(ttl={"ttl": 60, "strategy": "delete"})["thread_id"]
    kept = client.threads.create()["thread_id"]
    bobs = get_sync_client(url=server.langgraph_url, api_key=bob_key).threads.create(ttl=1)["thread_id"]
    client.runs.wait(short, "universal_chat", input=TURN)
    client.threads.update(longer, metadata={}, ttl=2)

    shown = client.threads.get(short, include=["ttl"])["ttl"]
    assert shown["strategy"] == "delete" and shown["ttl_minutes"] == 1 and "ttl" not in client.threads.get(kept)
    assert threads_expired_delete() == 0  # nothing has passed yet
    assert threads_expired_delete(now=timezone.now() + timedelta(seconds=90)) == 2  # alice's short one and bob's

    assert {str(pk) for pk in Conversation.objects.values_list("pk", flat=True)} == {longer, kept}
    with pytest.raises(NotFoundError):
        client.threads.get(short)
    assert threads_expired_delete(now=timezone.now() + timedelta(minutes=3)) == 1
    assert [t["thread_id"] for t in client.threads.search()] == [kept]
    assert not Conversation.objects.filter(pk=bobs).exists()
    assert Schedule.objects.filter(name=EXPIRY_SCHEDULE_NAME,
                                   func="agent_server.tasks.thread_expiry_sweep_task").exists()


@pytest.mark.parametrize("ttl", [0, -1, "soon", True, {"ttl": 5, "strategy": "forever"}, {"strategy": "delete"}])
def test_a_bad_ttl_is_a_422_and_makes_no_thread(server, alice_key, ttl):
    response = httpx.post(f"{server.langgraph_url}/threads", json={"ttl": ttl}, headers={"x-api-key": alice_key})

    assert response.status_code == 422 and "ttl" in response.text and Conversation.objects.count() == 0


def test_a_threads_state_is_its_graphs_and_a_copy_carries_its_messages_but_no_bill(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "universal_chat", input=TURN)

    state = client.threads.get_state(thread["thread_id"])
    history = client.threads.get_history(thread["thread_id"])
    copy = client.threads.copy(thread["thread_id"])

    messages = state["values"]["messages"]  # the graph's: the turn's tool call and result too
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"] and "84" in messages[-1]["content"]
    question, reply = Message.objects.filter(conversation_id=thread["thread_id"]).order_by("sequence")
    assert messages[0]["id"] == str(question.pk) and reply.content == messages[-1]["content"]
    assert sum(m["usage_metadata"]["total_tokens"] for m in messages if m["type"] == "ai") == reply.total_tokens > 0
    assert history[0]["values"] == state["values"]
    copied = Conversation.objects.get(pk=copy["thread_id"])
    assert copy["values"] == state["values"]  # the graph's state (tests below), its messages copied as text
    assert [m.content for m in copied.messages.order_by("sequence")] == [question.content, reply.content]
    assert copied.message_count == 2 and copied.total_tokens == 0 and copied.total_cost == 0
    assert_i1(copied)
    assert_i1(Conversation.objects.get(pk=thread["thread_id"]))


def test_a_thread_whose_latest_run_failed_is_in_error_until_a_later_run_succeeds(graph_server, alice_key):
    """As LangGraph's server sets a thread's status when its run ends: `error` after a run that raised, found by
    threads.search(status="error"), and `idle` again once a later run has succeeded."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "failing", input={"fail": False})
    assert client.threads.get(thread)["status"] == "idle"

    client.runs.wait(thread, "failing", input={"fail": True}, raise_error=False)

    assert [r["status"] for r in client.runs.list(thread)] == ["error", "success"]
    assert client.threads.get(thread)["status"] == "error"
    assert [t["thread_id"] for t in client.threads.search(status="error")] == [thread]
    assert client.threads.search(status="idle") == []
    client.runs.wait(thread, "failing", input={"fail": False})
    assert client.threads.get(thread)["status"] == "idle" and client.threads.search(status="error") == []


def test_a_state_update_after_a_failed_run_takes_the_thread_out_of_error(graph_server, alice_key):
    """As LangGraph's server sets a thread's status on update_state, from the state the update leaves (here with
    nothing left to run: `idle`), no longer the failed run's error; a later failure is an error again."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "failing", input={"fail": True}, raise_error=False)
    assert client.threads.get(thread)["status"] == "error"

    client.threads.update_state(thread, {"fail": False}, as_node="attempt")

    assert client.threads.get(thread)["status"] == "idle"
    assert [t["thread_id"] for t in client.threads.search(status="idle")] == [thread]
    assert client.threads.search(status="error") == [] and client.threads.count(status="idle") == 1
    client.runs.wait(thread, "failing", input={"fail": True}, raise_error=False)
    assert client.threads.get(thread)["status"] == "error"
    assert [t["thread_id"] for t in client.threads.search(status="error")] == [thread]


def test_a_state_update_that_leaves_nodes_to_run_makes_the_thread_interrupted(graph_server, alice_key):
    """As LangGraph's server sets a thread's status on update_state: `interrupted` when the state the update left
    has nodes next (here as if __start__ had run: `attempt` is next), however the run before it ended; a run that
    goes on from it leaves it `idle`."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "failing", input={"fail": False})
    assert client.threads.get(thread)["status"] == "idle"

    client.threads.update_state(thread, {"fail": False}, as_node="__start__")

    assert client.threads.get_state(thread)["next"] == ["attempt"]
    assert client.threads.get(thread)["status"] == "interrupted"
    assert [t["thread_id"] for t in client.threads.search(status="interrupted")] == [thread]
    assert client.threads.search(status="idle") == [] and client.threads.count(status="interrupted") == 1
    copy = client.threads.copy(thread)  # a copy reads idle until it runs, as the stock server's
    assert copy["status"] == "idle" and client.threads.get_state(copy["thread_id"])["next"] == ["attempt"]
    client.threads.delete(copy["thread_id"])
    client.runs.wait(thread, "failing", input=None)
    assert client.threads.get(thread)["status"] == "idle"
    assert [t["thread_id"] for t in client.threads.search(status="idle")] == [thread]


async def _until_run_done(stream, run_id: str) -> list:
    """The parts of a thread's stream up to the `metadata` that says the run is done."""
    parts = []
    async for part in stream:
        parts.append(part)
        if part.event == "metadata" and part.data == {"status": "run_done", "run_id": run_id}:
            return parts
    raise AssertionError("the thread's stream ended before the run was done")


async def test_a_client_joined_on_a_thread_gets_its_runs_and_state_updates_and_resumes(graph_server, alice_key):
    """client.threads.join_stream, as LangGraph's server streams a thread: each run of the thread as its own stream
    between `metadata` {run_id, attempt} and {status: run_done}, the state after each update_state
    (`state_update`), and with last_event_id the rest after that frame (here a run's first frame, `<run>:0-0`)."""
    client = get_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = (await client.threads.create())["thread_id"]
    first = await client.runs.wait(thread, "failing", input={"fail": False})
    (earlier,) = await client.runs.list(thread)
    joined = (await client.threads.join_stream(thread, stream_mode=["run_modes", "state_update"],
                                               last_event_id=f"{earlier['run_id']}:0-0")).__aiter__()

    replayed = await _until_run_done(joined, earlier["run_id"])  # the run before the join, from its first frame
    await client.threads.update_state(thread, {"fail": False}, as_node="attempt")
    update = await anext(joined)
    streamed = [part async for part in client.runs.stream(thread, "failing", input={"fail": False},
                                                          stream_mode=["values", "updates"])]
    later = await _until_run_done(joined, streamed[0].data["run_id"])  # a run started after the join
    resumed = await _until_run_done(await client.threads.join_stream(thread, last_event_id=later[1].id),
                                    later[0].data["run_id"])
    await joined.aclose()

    assert [(p.event, p.data) for p in replayed] == [
        ("metadata", {"run_id": earlier["run_id"], "attempt": 1}), ("values", {"count": 0, "fail": False}),
        ("values", first), ("metadata", {"status": "run_done", "run_id": earlier["run_id"]})]
    assert update.event == "state_update" and update.data["thread_id"] == thread
    assert update.data["state"]["values"] == {"count": 1, "fail": False} and update.data["state"]["next"] == []
    assert [(p.event, p.data) for p in later] == [*[(p.event, p.data) for p in streamed if p.event != "end"],
                                                  ("metadata", {"status": "run_done", "run_id": later[0].data["run_id"]})]
    assert all(p.id.startswith(f"{later[0].data['run_id']}:") for p in later)
    assert [(p.id, p.event, p.data) for p in resumed] == [(p.id, p.event, p.data) for p in later[2:]]


async def test_joining_a_thread_stream_in_a_mode_it_has_not_or_on_another_users_thread_is_refused(
        server, alice_key, bob_key):
    alice, bob = (get_client(url=server.langgraph_url, api_key=key) for key in (alice_key, bob_key))
    thread = (await alice.threads.create())["thread_id"]

    with pytest.raises(UnprocessableEntityError):
        [part async for part in await alice.threads.join_stream(thread, stream_mode="values")]
    refused = httpx.get(f"{server.langgraph_url}/threads/{thread}/stream", params={"stream_modes": "lifecycle,debug"},
                        headers={"x-api-key": alice_key})
    with pytest.raises(NotFoundError):
        [part async for part in await bob.threads.join_stream(thread)]
    with pytest.raises(NotFoundError):
        [part async for part in await alice.threads.join_stream(str(uuid.uuid4()))]

    assert refused.status_code == 422 and "debug" in refused.json()["detail"]


def test_a_copy_of_a_registered_graphs_thread_has_its_state_and_history_and_goes_on_from_them(graph_server,
                                                                                                  alice_key):
    """As LangGraph's server copies a thread, its checkpoints: the copy's state and history are the original's,
    its next run goes on from that state (the original's left as it was), and deleting the original keeps it."""
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "slow_counter", input={"delay": 0})
    client.runs.wait(thread, "slow_counter", input={"delay": 0})

    copy = client.threads.copy(thread)["thread_id"]

    state, copied = client.threads.get_state(thread), client.threads.get_state(copy)
    assert copied["values"] == state["values"] == {"count": 4, "delay": 0}
    assert copied["checkpoint"] == {**state["checkpoint"], "thread_id": copy}
    history = [h["checkpoint"]["checkpoint_id"] for h in client.threads.get_history(thread, limit=100)]
    assert [h["checkpoint"]["checkpoint_id"] for h in client.threads.get_history(copy, limit=100)] == history
    assert client.runs.wait(copy, "slow_counter", input={"delay": 0})["count"] == 6
    assert client.threads.get_state(thread)["values"]["count"] == 4
    client.threads.delete(thread)
    assert client.threads.get_state(copy)["values"]["count"] == 6
    assert len(client.threads.get_history(copy, limit=100)) == len(history) + 4


def test_a_copy_of_a_templates_thread_has_its_state_and_history_and_goes_on_from_them(server, alice_key):
    """A template's thread keeps its graph's state as a registered graph's does, and is copied as one: the copy's
    state is the original's whole (its tool calls, tool messages, ids), not its messages as text, its history is the
    original's, and its next run goes on from that state."""
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()["thread_id"]
    client.runs.wait(thread, "universal_chat", input=TURN)  # a calculator call, its result, the answer
    client.runs.wait(thread, "universal_chat", input={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "And 3*3?"}, {"type": "text", "text": " Thanks."}]}]})

    copy = client.threads.copy(thread)["thread_id"]

    state, copied = client.threads.get_state(thread), client.threads.get_state(copy)
    assert copied["values"] == state["values"] and client.threads.get(copy)["values"] == state["values"]
    assert [m["type"] for m in copied["values"]["messages"]] == ["human", "ai", "tool", "ai"] * 2
    assert copied["values"]["messages"][1]["tool_calls"][0]["args"] == {"expression": "12*7"}
    assert copied["checkpoint"] == {**state["checkpoint"], "thread_id": copy}
    history = [h["checkpoint"]["checkpoint_id"] for h in client.threads.get_history(thread, limit=100)]
    assert [h["checkpoint"]["checkpoint_id"] for h in client.threads.get_history(copy, limit=100)] == history
    went_on = client.runs.wait(copy, "universal_chat", input={"messages": [{"role": "user", "content": "2*5?"}]})
    assert went_on["messages"][:8] == state["values"]["messages"] and "10" in went_on["messages"][-1]["content"]
    assert client.threads.get_state(thread)["values"] == state["values"]


async def test_another_users_thread_is_not_found(server, alice_key, bob_key):
    alice_client = get_client(url=server.langgraph_url, api_key=alice_key)
    bob_client = get_client(url=server.langgraph_url, api_key=bob_key)
    thread = await alice_client.threads.create(metadata={"secret": "x"})

    for call in (lambda: bob_client.threads.get(thread["thread_id"]),
                 lambda: bob_client.threads.get_state(thread["thread_id"]),
                 lambda: bob_client.threads.update(thread["thread_id"], metadata={"a": 1}),
                 lambda: bob_client.threads.copy(thread["thread_id"]),
                 lambda: bob_client.threads.delete(thread["thread_id"]),
                 lambda: bob_client.runs.wait(thread["thread_id"], "universal_chat", input=TURN),
                 lambda: bob_client.runs.list(thread["thread_id"])):
        with pytest.raises(httpx.HTTPStatusError) as refused:  # runs.wait raises httpx's own error, not the SDK's
            await call()
        assert refused.value.response.status_code == 404
    assert await bob_client.threads.search() == []
    assert (await alice_client.threads.get(thread["thread_id"]))["metadata"] == {"secret": "x"}


async def test_deleting_a_thread_deletes_the_conversation(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()
    await client.runs.wait(thread["thread_id"], "universal_chat", input=TURN)

    await client.threads.delete(thread["thread_id"])

    assert not await sync_to_async(Conversation.objects.filter(pk=thread["thread_id"]).exists)()
    with pytest.raises(NotFoundError):
        await client.threads.get(thread["thread_id"])


def test_prune_deletes_the_owners_threads_named_with_their_runs_stopped_and_counts_them(server, alice, alice_key,
                                                                                      bob_key):
    from langgraph_sdk.errors import PermissionDeniedError

    from tests.factories import ApiTokenFactory
    from workflows.models import Checkpoint, WorkflowExecution

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bobs = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    ran, busy, kept = (client.threads.create()["thread_id"] for _ in range(3))
    client.runs.wait(ran, "universal_chat", input=TURN)
    pending = client.runs.create(busy, "universal_chat", input=TURN)["run_id"]  # no worker: it waits
    bob_thread = bobs.threads.create()["thread_id"]
    assert Checkpoint.objects.filter(thread_id=ran).exists()

    for bad in ({"thread_ids": ["not-a-thread"]}, {"thread_ids": [ran], "strategy": "keep_latest"},
                {"thread_ids": [ran], "strategy": "everything"}):
        with pytest.raises(UnprocessableEntityError):
            client.threads.prune(**bad)
    reader = get_sync_client(url=server.langgraph_url, api_key=ApiTokenFactory(user=alice, scopes=["read"]).key)
    with pytest.raises(PermissionDeniedError):
        reader.threads.prune([ran])
    assert Conversation.objects.count() == 4

    pruned = client.threads.prune([ran, busy, bob_thread, str(uuid.uuid4())])

    assert pruned == {"pruned_count": 2}  # bob's thread and a missing one are passed over
    assert set(Conversation.objects.values_list("pk", flat=True)) == {uuid.UUID(kept), uuid.UUID(bob_thread)}
    assert bobs.threads.get(bob_thread)["thread_id"] == bob_thread
    assert not Checkpoint.objects.filter(thread_id__in=[ran, busy]).exists()
    assert WorkflowExecution.objects.get(pk=pending).status == "cancelled"  # its run kept on the books, stopped
    for thread_id in (ran, busy):
        with pytest.raises(NotFoundError):
            client.threads.get(thread_id)
    assert client.threads.prune([]) == {"pruned_count": 0}



@pytest.fixture
def statements_logged(shared_daphne_server, openai_stub):
    """graph_server's graphs on a server that logs each statement it runs (tests/statements_logged_settings.py)."""
    from tests.agent_server.conftest import GRAPHS

    server = shared_daphne_server(CHATTER_GRAPHS=str(GRAPHS), OPENAI_BASE_URL=openai_stub.base_url,
                                  OPENAI_API_KEY="sk-test-not-a-real-key", DEBUG="1",
                                  DJANGO_SETTINGS_MODULE="tests.statements_logged_settings")
    server.langgraph_url = f"{server.base_url}/langgraph"
    return server


# A thread stream's look at the thread (agent_server.thread_stream._Arrivals): its read of the update checkpoints.
LOOK = 'SELECT "workflows_checkpoint"."checkpoint_id" AS "checkpoint_id" FROM "workflows_checkpoint" LEFT OUTER JOIN'
# The last statement of a join that follows runs, after its first look: its read of the runs in progress.
JOINED = 'MAX("workflows_executionevent"."seq") AS "last"'


def _statements(server, since: int) -> list[str]:
    """The statements the server ran since its log was `since` bytes long."""
    text = server.log.read_bytes()[since:].decode(errors="replace")
    return [line for line in text.splitlines() if " django.db.backends: " in line]


def _reads_of(thread: str, statements: list[str]) -> list[str]:
    """Those that read the thread (its row, its runs, its checkpoints): not the server's own work meanwhile (the
    audit chain's flush)."""
    return [s for s in statements if re.search(r"django\.db\.backends: \([0-9.]+\) SELECT ", s)
            and (thread in s or thread.replace("-", "") in s)]


async def _looked(server, thread: str, statement: str = LOOK) -> None:
    """Back once a stream of the thread runs `statement` (a look at the thread, by default) after now."""
    since = server.log.stat().st_size
    thread_hex = thread.replace("-", "")
    for _ in range(600):  # (30 s: a stream that never looks fails here)
        if any(statement in ran and (thread in ran or thread_hex in ran) for ran in _statements(server, since)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no stream of the thread looked at it")


async def test_an_idle_joined_thread_stream_reads_nothing_and_is_told_of_a_state_update_and_a_run(statements_logged,
                                                                                                 alice_key):
    """A joined thread stream waits on its owner's feed (workflows.realtime.user_subscribe): idle, it runs no
    statement between its looks for what the hub did not bring, one at each heartbeat (it read the thread's runs and
    state updates twice a second, three statements each time, for as long as its client stayed); an update_state
    and a run started on the thread are told by the hub and sent at once, long before its next look."""
    server = statements_logged
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread, "failing", input={"fail": False})
    joined = (await client.threads.join_stream(thread, stream_mode=["run_modes", "state_update"])).__aiter__()
    first = asyncio.ensure_future(anext(joined))
    await _looked(server, thread, JOINED)  # the stream's join: its look, then the runs in progress

    idle_from = server.log.stat().st_size
    await asyncio.sleep(3)
    idle = _reads_of(thread, _statements(server, idle_from))
    await _looked(server, thread)  # its look at the heartbeat
    await client.threads.update_state(thread, {"fail": False}, as_node="attempt")
    update = await asyncio.wait_for(first, HEARTBEAT_S / 2)  # (not left to its next look, at the next heartbeat)
    streamed = [part async for part in client.runs.stream(thread, "failing", input={"fail": False},
                                                          stream_mode=["values"])]
    run = await asyncio.wait_for(_until_run_done(joined, streamed[0].data["run_id"]), HEARTBEAT_S / 2)
    await joined.aclose()

    assert idle == [], "\n".join(idle)
    assert update.event == "state_update" and update.data["state"]["values"] == {"count": 1, "fail": False}
    assert [(p.event, p.data) for p in run] == [*[(p.event, p.data) for p in streamed if p.event != "end"],
                                                ("metadata", {"status": "run_done", "run_id": run[0].data["run_id"]})]


async def test_a_joined_thread_stream_ends_when_its_thread_is_deleted(statements_logged, alice_key):
    """Nothing tells an idle stream of its thread's deletion: its look at the heartbeat finds the thread gone."""
    client = get_client(url=statements_logged.langgraph_url, api_key=alice_key)
    thread = (await client.threads.create())["thread_id"]
    joined = await client.threads.join_stream(thread, stream_mode=["run_modes", "state_update"])
    rest = asyncio.ensure_future(asyncio.wait_for(_all(joined), 30))  # (a stream left open fails here)
    await _looked(statements_logged, thread)  # joined

    await client.threads.delete(thread)

    assert await rest == []


async def _all(stream) -> list:
    return [part async for part in stream]
