"""Definitions over the API: CRUD with version +1 on graph change, validate, from-template, ownership."""
import copy

import pytest

from engine.graph import normalize_graph
from tests.api.conftest import assert_error, error_fields
from workflows.models import WorkflowDefinition

URL = "/api/v1/workflows/definitions/"
pytestmark = pytest.mark.django_db
NODES = [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}]
EDGES = [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]
FIELDS = {"id", "name", "description", "nodes", "edges", "metadata", "template", "version", "is_public",
          "created_at", "updated_at"}


def create(api, **extra) -> dict:
    response = api.post(URL, {"name": "Mine", "nodes": NODES, "edges": EDGES, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_it_creates_reads_lists_and_runs_a_definition(api, alice):
    body = create(api, description="d", metadata={"team": "a"})
    assert set(body) == FIELDS and body["version"] == 1 and body["template"] is None
    assert WorkflowDefinition.objects.get(pk=body["id"]).owner == alice
    assert api.get(f"{URL}{body['id']}/").json() == body
    assert [d["id"] for d in api.get(URL).json()["results"]] == [body["id"]]
    run = api.post("/api/v1/executions/", {"definition_id": body["id"], "input": {"message": "hi"}}, format="json")
    assert run.status_code == 201 and run.json()["execution"]["definition_version"] == 1


def test_an_invalid_graph_is_a_400_with_every_error_and_no_row(api):
    nodes = copy.deepcopy(NODES)
    nodes[1]["config"] = {"temperature": 9, "max_tokens": -1}
    response = api.post(URL, {"name": "bad", "nodes": nodes, "edges": EDGES}, format="json")

    details = assert_error(response, 400, "invalid_graph")
    assert {d["path"] for d in details} == {"nodes[1].config.temperature", "nodes[1].config.max_tokens"}
    for body in ({"nodes": NODES, "edges": EDGES}, {"name": "x", "nodes": "nope", "edges": EDGES},
                 {"name": "  ", "nodes": NODES, "edges": EDGES}):
        assert api.post(URL, body, format="json").status_code == 400, body
    assert not WorkflowDefinition.objects.exists()


def test_a_change_of_nodes_or_edges_bumps_the_version(api):
    body = create(api)
    url = f"{URL}{body['id']}/"

    assert api.patch(url, {"name": "Renamed", "description": "x"}, format="json").json()["version"] == 1
    assert api.patch(url, {"nodes": NODES}, format="json").json()["version"] == 1
    nodes = copy.deepcopy(NODES)
    nodes[1]["config"] = {"temperature": 0.1}
    changed = api.patch(url, {"nodes": nodes}, format="json").json()
    assert changed["version"] == 2 and changed["name"] == "Renamed"


def test_a_bad_patch_is_a_400_and_changes_nothing(api):
    body = create(api)
    url = f"{URL}{body['id']}/"
    broken = [{"source": "start", "target": "nowhere"}]
    assert_error(api.patch(url, {"edges": broken, "name": "New"}, format="json"), 400, "invalid_graph")
    refused = api.patch(url, {"version": 9}, format="json")
    assert error_fields(assert_error(refused, 400, "validation_error")) == {"version"}
    definition = WorkflowDefinition.objects.get(pk=body["id"])
    assert (definition.name, definition.version, definition.edges) == ("Mine", 1, body["edges"])


def test_validate_reports_without_saving(api):
    ok = api.post(f"{URL}validate/", {"nodes": NODES, "edges": EDGES}, format="json")
    assert ok.status_code == 200 and ok.json() == {"valid": True, "errors": []}

    bad = api.post(f"{URL}validate/", {"nodes": NODES, "edges": [{"source": "start", "target": "x"}]},
                   format="json")
    assert bad.status_code == 200
    assert bad.json()["valid"] is False
    assert all(set(e) == {"path", "code", "message"} for e in bad.json()["errors"]) and bad.json()["errors"]
    assert api.post(f"{URL}validate/", {"nodes": "junk"}, format="json").json()["valid"] is False
    assert not WorkflowDefinition.objects.exists()


def test_from_template_copies_a_visible_template(api):
    response = api.post(f"{URL}from-template/", {"template": "tool_agent"}, format="json")

    assert response.status_code == 201
    body = response.json()
    template = api.get("/api/v1/workflows/templates/tool_agent/").json()
    assert body["template"] == "tool_agent" and body["version"] == 1
    assert {"nodes": body["nodes"], "edges": body["edges"]} == normalize_graph(template["graph"])
    assert body["metadata"]["from_template"] == {"key": "tool_agent", "version": template["version"]}
    named = api.post(f"{URL}from-template/", {"template": template["id"], "name": "My agent"}, format="json")
    assert named.json()["name"] == "My agent"


def test_from_an_unknown_or_private_template_is_a_404_and_no_row(api, bob_api):
    api.post("/api/v1/workflows/templates/", {"key": "alices", "name": "A", "graph": {"nodes": NODES, "edges": EDGES}},
             format="json")
    assert_error(bob_api.post(f"{URL}from-template/", {"template": "alices"}, format="json"), 404, "not_found")
    assert_error(api.post(f"{URL}from-template/", {"template": "nope"}, format="json"), 404, "not_found")
    assert_error(api.post(f"{URL}from-template/", {}, format="json"), 400, "validation_error")
    assert not WorkflowDefinition.objects.exists()


def test_other_users_definitions_are_hidden_unless_public_and_never_writable(api, bob_api):
    private = create(api)
    public = create(api, name="Shared", is_public=True)

    assert [d["id"] for d in bob_api.get(URL).json()["results"]] == [public["id"]]
    assert_error(bob_api.get(f"{URL}{private['id']}/"), 404, "not_found")
    assert_error(bob_api.patch(f"{URL}{private['id']}/", {"name": "x"}, format="json"), 404, "not_found")
    assert_error(bob_api.delete(f"{URL}{private['id']}/"), 404, "not_found")
    assert_error(bob_api.patch(f"{URL}{public['id']}/", {"name": "x"}, format="json"), 403, "permission_denied")
    assert_error(bob_api.delete(f"{URL}{public['id']}/"), 403, "permission_denied")
    assert WorkflowDefinition.objects.count() == 2


def test_delete_keeps_past_runs_with_their_version(api):
    body = create(api)
    run = api.post("/api/v1/executions/", {"definition_id": body["id"], "input": {"message": "hi"}},
                   format="json").json()
    assert api.delete(f"{URL}{body['id']}/").status_code == 204
    detail = api.get(f"/api/v1/executions/{run['execution']['id']}/").json()
    assert detail["definition"] is None and detail["definition_version"] == 1


def test_the_list_filters_by_name_template_and_public(api):
    create(api, name="Alpha")
    api.post(f"{URL}from-template/", {"template": "summarize"}, format="json")
    create(api, name="Beta", is_public=True)

    assert [d["name"] for d in api.get(URL, {"name": "alp"}).json()["results"]] == ["Alpha"]
    assert [d["template"] for d in api.get(URL, {"template": "summarize"}).json()["results"]] == ["summarize"]
    assert [d["name"] for d in api.get(URL, {"is_public": "true"}).json()["results"]] == ["Beta"]
    names = [d["name"] for d in api.get(URL, {"ordering": "name"}).json()["results"]]
    assert names == sorted(names)


def test_item_16_every_graph_naming_another_users_prompt_is_refused_at_once_as_a_missing_one(api, alice, bob):
    """Definitions (created and changed), templates, runs of a graph and schedules of one (crons): each names a
    stored prompt its owner must be able to fetch when it runs; bob's prompt is answered as one that does not
    exist."""
    from core.errors import InvalidInput
    from prompts.models import Prompt
    from tests.prompts.factories import PromptFactory
    from workflows.models import WorkflowExecution, WorkflowSchedule, WorkflowTemplate
    from workflows.services.schedules import schedule_create

    PromptFactory(owner=bob, name="bobs", content="Bob's secret instructions.", labels=["production"])
    mine = create(api)
    nodes = [NODES[0], {**NODES[1], "config": {"prompt": {"name": "bobs"}}}, NODES[2]]
    graph = {"nodes": nodes, "edges": EDGES}
    requests = [
        ("post", URL, {"name": "Theirs", **graph}),
        ("patch", f"{URL}{mine['id']}/", {"nodes": nodes}),
        ("post", "/api/v1/workflows/templates/", {"key": "theirs", "name": "Theirs", "graph": graph}),
        ("post", "/api/v1/executions/", {"graph": graph, "input": {"message": "hi"}}),
    ]

    def answers() -> list:
        with pytest.raises(InvalidInput) as scheduled:
            schedule_create(owner=alice, name="s", cron="0 7 * * *", graph=graph, run_input={"message": "hi"})
        assert scheduled.value.details[0]["path"] == "nodes[1].config.prompt"
        return [getattr(api, method)(url, body, format="json") for method, url, body in requests]

    foreign = answers()
    Prompt.objects.filter(owner=bob).delete()
    missing = answers()

    for (method, url, _), refused, absent in zip(requests, foreign, missing):
        details = assert_error(refused, 400, "validation_error")
        assert any(d["path"].endswith("nodes[1].config.prompt") for d in details), (method, url, details)
        assert refused.json() == absent.json(), (method, url)
    assert WorkflowDefinition.objects.get(pk=mine["id"]).version == 1
    assert not WorkflowTemplate.objects.filter(key="theirs").exists()
    assert (WorkflowSchedule.objects.count(), WorkflowExecution.objects.count()) == (0, 0)
