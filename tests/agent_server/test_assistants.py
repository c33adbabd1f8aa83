"""Assistants over the official langgraph-sdk against a real daphne server: every template and definition the
user may run, with its graph, schemas and versions; another user's definition is a 404."""
import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError

from workflows.models import WorkflowTemplate
from workflows.services.definitions import definition_from_template

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_template_is_an_assistant_named_by_its_key(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    found = client.assistants.search(limit=100)

    keys = set(WorkflowTemplate.objects.filter(is_builtin=True).values_list("key", flat=True))
    assert {a["graph_id"] for a in found} == keys and "universal_chat" in keys
    chat = client.assistants.get("universal_chat")
    assert chat["assistant_id"] == chat["graph_id"] == "universal_chat" and chat["version"] >= 1
    assert [a["graph_id"] for a in client.assistants.search(graph_id="summarize")] == ["summarize"]
    assert client.assistants.count() == len(keys)
    assert [a["name"] for a in client.assistants.search(sort_by="name", limit=100)] == sorted(
        a["name"] for a in found)
    with pytest.raises(UnprocessableEntityError):
        client.assistants.search(sort_by="no_such_field")


def test_an_assistants_graph_and_schemas_are_its_templates(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    graph = client.assistants.get_graph("universal_chat")
    schemas = client.assistants.get_schemas("universal_chat")
    versions = client.assistants.get_versions("universal_chat")

    template = WorkflowTemplate.objects.get(key="universal_chat", is_builtin=True)
    assert {node["id"] for node in graph["nodes"]} == {node["id"] for node in template.graph["nodes"]}
    assert {(e["source"], e["target"]) for e in graph["edges"]} == {
        (e["source"], e["target"]) for e in template.graph["edges"]}
    assert any(e["conditional"] for e in graph["edges"])
    assert schemas["graph_id"] == "universal_chat" and "messages" in schemas["input_schema"]["properties"]
    assert "temperature" in schemas["config_schema"]["properties"]
    assert [v["version"] for v in versions] == [template.version]


async def test_a_definition_is_an_assistant_of_its_owner_only(server, alice, alice_key, bob_key):
    from asgiref.sync import sync_to_async

    definition = await sync_to_async(definition_from_template)(owner=alice, template="universal_chat", name="Mine")
    assistant_id = f"definition-{definition.pk}"
    alice_client = get_client(url=server.langgraph_url, api_key=alice_key)
    bob_client = get_client(url=server.langgraph_url, api_key=bob_key)

    mine = await alice_client.assistants.get(assistant_id)
    searched = await alice_client.assistants.search(graph_id=assistant_id)

    assert mine["name"] == "Mine" and mine["graph_id"] == assistant_id
    assert [a["assistant_id"] for a in searched] == [assistant_id]
    with pytest.raises(NotFoundError):
        await bob_client.assistants.get(assistant_id)
    assert assistant_id not in {a["assistant_id"] for a in await bob_client.assistants.search(limit=100)}


def test_a_request_without_a_valid_key_is_refused(server):
    with pytest.raises(httpx.HTTPStatusError) as refused:
        get_sync_client(url=server.langgraph_url, api_key="not-a-key").assistants.search()
    assert refused.value.response.status_code == 401
    assert httpx.post(f"{server.langgraph_url}/assistants/search", json={}).status_code == 401
