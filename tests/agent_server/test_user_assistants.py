"""Users' own assistants over the official langgraph-sdk against a real daphne server: created on a graph the user may
run, changed as numbered versions, set back to an earlier one, searched, deleted; each write audited; another user's
is a 404; a run on one runs its graph with its version's config under the run's own."""
import uuid

import httpx
import pytest
from asgiref.sync import sync_to_async
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, PermissionDeniedError, UnprocessableEntityError

from agent_server.models import Assistant, AssistantVersion
from audit.models import AuditEvent
from conversations.models import Conversation
from tests.factories import ApiTokenFactory
from workflows.models import WorkflowExecution, WorkflowSchedule, WorkflowTemplate
from workflows.services.definitions import definition_from_template

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}


def audited(assistant_id: str) -> list[str]:
    return list(AuditEvent.objects.filter(target_type="assistant", target_id=assistant_id).order_by("id")
                .values_list("action", flat=True))


def test_an_assistant_is_created_changed_as_versions_set_back_and_deleted(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    created = client.assistants.create("universal_chat", {"configurable": {"temperature": 0.3}},
                                       context={"system_prompt": "Be terse."}, metadata={"team": "a"}, name="Terse",
                                       description="Short answers")
    aid = created["assistant_id"]
    updated = client.assistants.update(aid, context={"system_prompt": "Be thorough."}, metadata={"stage": "b"})
    versions = client.assistants.get_versions(aid)
    back = client.assistants.set_latest(aid, 1)

    assert uuid.UUID(aid) and created["graph_id"] == "universal_chat" and created["version"] == 1
    assert (created["name"], created["description"]) == ("Terse", "Short answers")
    assert created["config"] == {"configurable": {"temperature": 0.3}}
    assert created["context"] == {"system_prompt": "Be terse."} and created["metadata"] == {"team": "a"}
    assert updated["version"] == 2 and updated["context"] == {"system_prompt": "Be thorough."}
    assert updated["metadata"] == {"team": "a", "stage": "b"} and updated["config"] == created["config"]
    assert updated["name"] == "Terse"
    assert [(v["version"], v["context"]["system_prompt"]) for v in versions] == [(2, "Be thorough."),
                                                                                 (1, "Be terse.")]
    assert all(v["assistant_id"] == aid for v in versions)
    assert [v["version"] for v in client.assistants.get_versions(aid, metadata={"stage": "b"})] == [2]
    assert back["version"] == 1 and back["context"] == {"system_prompt": "Be terse."}
    assert back["metadata"] == {"team": "a"}
    fetched = client.assistants.get(aid)
    assert fetched["version"] == 1 and fetched["assistant_id"] == aid and fetched["updated_at"] >= fetched[
        "created_at"]
    assert AssistantVersion.objects.filter(assistant_id=aid).count() == 2

    client.assistants.delete(aid)

    with pytest.raises(NotFoundError):
        client.assistants.get(aid)
    assert not Assistant.objects.filter(pk=aid).exists() and not AssistantVersion.objects.filter(
        assistant_id=aid).exists()
    assert audited(aid) == ["assistant.created", "assistant.updated", "assistant.version_set", "assistant.deleted"]


def test_search_and_count_include_the_users_assistants(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    builtins = WorkflowTemplate.objects.filter(is_builtin=True).count()
    chat = client.assistants.create("universal_chat", metadata={"team": "a"}, name="Team chat")
    brief = client.assistants.create("summarize", metadata={"team": "b"}, name="Brief")

    assert [a["assistant_id"] for a in client.assistants.search(metadata={"team": "a"})] == [chat["assistant_id"]]
    assert [a["assistant_id"] for a in client.assistants.search(graph_id="summarize")] == [
        "summarize", brief["assistant_id"]]
    assert [a["assistant_id"] for a in client.assistants.search(name="team ch")] == [chat["assistant_id"]]
    assert client.assistants.count() == builtins + 2
    assert client.assistants.count(graph_id="universal_chat") == 2
    assert client.assistants.count(metadata={"team": "b"}) == 1
    page = client.assistants.search(limit=builtins + 1, response_format="object", select=["assistant_id", "name"])
    assert page["next"] == str(builtins + 1) and set(page["assistants"][0]) == {"assistant_id", "name"}
    assert client.assistants.search(limit=builtins + 2, response_format="object")["next"] is None


async def test_bob_never_sees_or_changes_alices_assistant(server, alice_key, bob_key):
    alice = get_client(url=server.langgraph_url, api_key=alice_key)
    bob = get_client(url=server.langgraph_url, api_key=bob_key)
    aid = (await alice.assistants.create("universal_chat", name="Mine"))["assistant_id"]
    thread = await bob.threads.create()

    for attempt in (bob.assistants.get(aid), bob.assistants.update(aid, name="Bob's"), bob.assistants.delete(aid),
                    bob.assistants.set_latest(aid, 1), bob.assistants.get_versions(aid),
                    bob.assistants.get_graph(aid), bob.assistants.get_schemas(aid),
                    bob.runs.wait(thread["thread_id"], aid, input=TURN), bob.runs.wait(None, aid, input=TURN)):
        with pytest.raises(httpx.HTTPStatusError) as refused:  # runs.wait raises httpx's own error
            await attempt
        assert refused.value.response.status_code == 404

    assert aid not in {a["assistant_id"] for a in await bob.assistants.search(limit=100)}
    assert await bob.assistants.count(name="Mine") == 0 and await alice.assistants.count(name="Mine") == 1
    mine = await alice.assistants.get(aid)
    assert mine["name"] == "Mine" and mine["version"] == 1
    assert not await sync_to_async(WorkflowExecution.objects.filter(owner__username="bob").exists)()


def test_if_exists_says_what_a_taken_id_does(server, alice_key, bob_key):
    alice = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bob = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    chosen = str(uuid.uuid4())
    alice.assistants.create("universal_chat", assistant_id=chosen, name="First")

    again = alice.assistants.create("summarize", assistant_id=chosen, name="Second", if_exists="do_nothing")

    assert again["assistant_id"] == chosen and again["name"] == "First" and again["graph_id"] == "universal_chat"
    with pytest.raises(ConflictError):
        alice.assistants.create("summarize", assistant_id=chosen, name="Second")
    with pytest.raises(ConflictError):
        alice.assistants.create("summarize", assistant_id=chosen, if_exists="raise")
    with pytest.raises(ConflictError):  # another user's id is taken, and stays theirs
        bob.assistants.create("summarize", assistant_id=chosen, if_exists="do_nothing")
    assert Assistant.objects.count() == AssistantVersion.objects.count() == 1
    assert audited(chosen) == ["assistant.created"]


def test_bad_input_is_refused_and_leaves_no_row(server, alice_key, bob):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bobs = definition_from_template(owner=bob, template="universal_chat", name="Bob's")
    audit_rows = AuditEvent.objects.count()

    with pytest.raises(NotFoundError):
        client.assistants.create("no_such_graph")
    with pytest.raises(NotFoundError):  # a graph alice may not run
        client.assistants.create(f"definition-{bobs.pk}")
    for bad in ({"context": {"temperature": 9}}, {"context": {"no_such_key": 1}},
                {"config": {"configurable": {"max_tool_calls": "many"}}}, {"config": {"configurable": []}},
                {"assistant_id": "not-a-uuid"}, {"name": "n" * 256}, {"metadata": ["not", "an", "object"]}):
        response = httpx.post(f"{server.langgraph_url}/assistants", json={"graph_id": "universal_chat", **bad},
                              headers={"x-api-key": alice_key})
        assert response.status_code == 422 and response.json()["detail"], bad
    assert httpx.post(f"{server.langgraph_url}/assistants", json={"name": "no graph"},
                      headers={"x-api-key": alice_key}).status_code == 422
    assert Assistant.objects.count() == 0 and AuditEvent.objects.count() == audit_rows

    aid = client.assistants.create("universal_chat")["assistant_id"]
    with pytest.raises(UnprocessableEntityError):
        client.assistants.update(aid, context={"temperature": 9})
    with pytest.raises(NotFoundError):
        client.assistants.update(aid, graph_id="no_such_graph")
    with pytest.raises(NotFoundError):
        client.assistants.set_latest(aid, 7)
    assert httpx.post(f"{server.langgraph_url}/assistants/{aid}/latest", json={"version": 0},
                      headers={"x-api-key": alice_key}).status_code == 422
    assert list(AssistantVersion.objects.filter(assistant_id=aid).values_list("version", flat=True)) == [1]
    assert audited(aid) == ["assistant.created"]


def test_a_graphs_own_assistant_cannot_be_changed_or_deleted(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    for attempt in (lambda: client.assistants.delete("universal_chat"),
                    lambda: client.assistants.update("universal_chat", name="Mine"),
                    lambda: client.assistants.set_latest("universal_chat", 1)):
        with pytest.raises(PermissionDeniedError) as refused:
            attempt()
        assert "system assistant" in refused.value.response.json()["detail"]

    assert client.assistants.get("universal_chat")["name"] == "Universal chat"
    assert WorkflowTemplate.objects.filter(key="universal_chat", is_builtin=True).exists()


def test_writing_assistants_needs_the_chat_scope(server, alice):
    reader = get_sync_client(url=server.langgraph_url, api_key=ApiTokenFactory(user=alice, scopes=["read"]).key)
    writer = get_sync_client(url=server.langgraph_url, api_key=ApiTokenFactory(user=alice, scopes=["chat"]).key)

    with pytest.raises(PermissionDeniedError):
        reader.assistants.create("universal_chat")
    aid = writer.assistants.create("universal_chat")["assistant_id"]
    with pytest.raises(PermissionDeniedError):
        reader.assistants.update(aid, name="Renamed")
    with pytest.raises(PermissionDeniedError):
        reader.assistants.delete(aid)

    assert reader.assistants.get(aid)["name"] == "Untitled" and len(reader.assistants.get_versions(aid)) == 1
    assert Assistant.objects.filter(pk=aid).exists()


def test_a_run_on_an_assistant_runs_its_graph_with_its_version_under_the_runs_config(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    assistant = client.assistants.create("research_assistant", {"configurable": {"max_tool_calls": 2}},
                                         context={"system_prompt": "You are Terse.", "temperature": 0.3})
    aid = assistant["assistant_id"]
    thread = client.threads.create()

    client.runs.wait(thread["thread_id"], aid, input=TURN, context={"temperature": 0.7})
    client.assistants.update(aid, context={"system_prompt": "You are version two."})
    client.runs.wait(thread["thread_id"], aid, input=TURN)

    first, second = WorkflowExecution.objects.filter(conversation_id=thread["thread_id"]).order_by("created_at")
    assert first.template.key == "research_assistant" and first.status == "completed"
    assert first.config["system_prompt"] == "You are Terse."  # the template's own prompt is under the assistant's
    assert first.config["temperature"] == 0.7 and first.config["max_tool_calls"] == 2  # the run's over the assistant's
    assert first.config["enable_retrieval"] is True  # the template's params stay under both
    assert second.config["system_prompt"] == "You are version two." and second.config["temperature"] is None
    assert second.config["max_tool_calls"] == 2
    runs = client.runs.list(thread["thread_id"])
    assert [r["assistant_id"] for r in runs] == [aid, aid]


async def test_a_run_without_a_thread_and_a_cron_use_the_assistant_too(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    aid = (await client.assistants.create("universal_chat", context={"system_prompt": "Stateless."}))["assistant_id"]

    created = []
    async for _ in client.runs.stream(None, aid, input=TURN, on_run_created=created.append):
        pass
    cron = await client.crons.create(aid, schedule="0 7 * * *", input=TURN)

    execution = await sync_to_async(WorkflowExecution.objects.get)(pk=created[0]["run_id"])
    assert execution.config["system_prompt"] == "Stateless." and execution.status == "completed"
    assert cron["assistant_id"] == aid
    schedule = await sync_to_async(WorkflowSchedule.objects.get)(pk=cron["cron_id"])
    assert schedule.config["system_prompt"] == "Stateless."

    await client.assistants.delete(aid)

    assert not await sync_to_async(WorkflowSchedule.objects.filter(pk=cron["cron_id"]).exists)()
    assert await sync_to_async(WorkflowExecution.objects.filter(pk=execution.pk).exists)()  # runs stay on the books


def test_deleting_with_delete_threads_deletes_the_threads_that_name_it(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    aid = client.assistants.create("universal_chat")["assistant_id"]
    named = client.threads.create(metadata={"assistant_id": aid})
    other = client.threads.create(metadata={"assistant_id": "universal_chat"})

    client.assistants.delete(aid, delete_threads=True)

    assert not Conversation.objects.filter(pk=named["thread_id"]).exists()
    assert Conversation.objects.filter(pk=other["thread_id"]).exists()
