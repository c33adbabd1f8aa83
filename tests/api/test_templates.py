"""Templates: built-ins read-only, users' own templates with version +1 on graph change; visibility."""
import copy
from decimal import Decimal
from uuid import UUID

import pytest

from analytics.models import TemplateAnalytics
from tests.api.conftest import assert_error
from tests.factories import WorkflowTemplateFactory
from workflows.models import WorkflowTemplate

URL = "/api/v1/workflows/templates/"
pytestmark = pytest.mark.django_db
GRAPH = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
         "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}
FIELDS = {"id", "key", "name", "description", "category", "is_builtin", "is_public", "params", "graph", "version",
          "created_at", "updated_at"}


def create(api, key="brief", **extra) -> dict:
    response = api.post(URL, {"key": key, "name": "Brief", "graph": GRAPH, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_the_list_has_the_builtins(api):
    body = api.get(URL, {"page_size": 100}).json()
    keys = {t["key"] for t in body["results"] if t["is_builtin"]}
    assert {"universal_chat", "research_assistant", "summarize", "draft_and_refine", "tool_agent"} <= keys
    assert set(body["results"][0]) == FIELDS


def test_a_template_is_found_by_key_or_id(api):
    by_key = api.get(f"{URL}universal_chat/").json()
    assert api.get(f"{URL}{by_key['id']}/").json() == by_key
    assert by_key["is_builtin"] and by_key["graph"]["nodes"]


def test_builtins_are_read_only(api, staff):
    for client_user in (api,):
        assert_error(client_user.patch(f"{URL}universal_chat/", {"name": "Mine now"}, format="json"), 403,
                     "permission_denied")
        assert_error(client_user.delete(f"{URL}universal_chat/"), 403, "permission_denied")
    assert WorkflowTemplate.objects.get(key="universal_chat").name != "Mine now"


def test_a_user_creates_a_template_with_normalized_graph_and_analytics(api, alice):
    body = create(api, params={"temperature": 0.2}, description="short answers", category="writing")

    template = WorkflowTemplate.objects.get(pk=body["id"])
    assert template.owner == alice and not template.is_builtin and template.version == 1
    normalized = {"nodes": [{**node, "config": {}, "label": node["id"]} for node in GRAPH["nodes"]],
                  "edges": GRAPH["edges"]}  # every node with its config and label, as stored
    assert body["graph"] == template.graph == normalized and body["params"] == {"temperature": 0.2}
    [analytics] = [row for row in api.get("/api/v1/analytics/templates/").json()["results"]
                   if row["template_id"] == str(template.pk)]
    assert analytics["total_executions"] == 0 and Decimal(analytics["total_cost"]) == 0  # no run yet: zeros
    run = api.post("/api/v1/executions/", {"template": "brief", "input": {"message": "hi"}}, format="json")
    assert run.status_code == 201 and run.json()["execution"]["config"]["temperature"] == 0.2
    assert TemplateAnalytics.objects.get(template=template).total_executions == 1  # made as its first run ended


def test_bad_input_is_a_400_with_details_and_no_row(api):
    before = WorkflowTemplate.objects.count()
    bad_graph = copy.deepcopy(GRAPH)
    bad_graph["nodes"][1]["type"] = "oracle"
    cases = [
        ({"key": "Has Spaces", "name": "x", "graph": GRAPH}, 400),
        ({"key": "universal_chat", "name": "x", "graph": GRAPH}, 400),
        ({"key": "ok", "name": "x", "graph": bad_graph}, 400),
        ({"key": "ok", "name": "x", "graph": GRAPH, "params": {"temperature": 7}}, 400),
        ({"key": "ok", "graph": GRAPH}, 400),
    ]
    for body, status in cases:
        response = api.post(URL, body, format="json")
        assert response.status_code == status, (body, response.content)
        assert response.json()["error"]["details"], body
    assert WorkflowTemplate.objects.count() == before


def test_a_graph_change_bumps_the_version_and_other_changes_do_not(api):
    body = create(api)
    url = f"{URL}{body['id']}/"

    renamed = api.patch(url, {"name": "Renamed", "is_public": True}, format="json").json()
    assert (renamed["name"], renamed["is_public"], renamed["version"]) == ("Renamed", True, 1)
    same_graph = api.patch(url, {"graph": GRAPH}, format="json").json()
    assert same_graph["version"] == 1
    changed = copy.deepcopy(GRAPH)
    changed["nodes"][1]["config"] = {"system_message": "Be brief."}
    assert api.patch(url, {"graph": changed}, format="json").json()["version"] == 2
    assert_error(api.patch(url, {"key": "renamed"}, format="json"), 400, "validation_error")
    assert WorkflowTemplate.objects.get(pk=body["id"]).key == "brief"


def test_private_templates_are_the_owners_and_public_ones_are_read_only_for_others(api, bob_api):
    private = create(api, key="private_one")
    public = create(api, key="public_one", is_public=True)

    assert_error(bob_api.get(f"{URL}{private['id']}/"), 404, "not_found")
    assert_error(bob_api.get(f"{URL}private_one/"), 404, "not_found")
    assert_error(bob_api.delete(f"{URL}{private['id']}/"), 404, "not_found")
    assert "private_one" not in {t["key"] for t in bob_api.get(URL, {"page_size": 100}).json()["results"]}
    assert bob_api.get(f"{URL}public_one/").status_code == 200
    assert_error(bob_api.patch(f"{URL}{public['id']}/", {"name": "bob's"}, format="json"), 403, "permission_denied")
    assert_error(bob_api.delete(f"{URL}{public['id']}/"), 403, "permission_denied")
    run = bob_api.post("/api/v1/executions/", {"template": "public_one", "input": {"message": "hi"}}, format="json")
    assert run.status_code == 201


def test_delete_keeps_past_runs(api):
    body = create(api)
    run = api.post("/api/v1/executions/", {"template": "brief", "input": {"message": "hi"}}, format="json").json()

    assert api.delete(f"{URL}{body['id']}/").status_code == 204

    assert not WorkflowTemplate.objects.filter(pk=body["id"]).exists()
    detail = api.get(f"/api/v1/executions/{run['execution']['id']}/").json()
    assert detail["template"] is None and detail["total_tokens"] == run["execution"]["total_tokens"]


def test_the_list_filters_and_orders(api):
    create(api, key="mine_writing", category="writing")
    assert [t["key"] for t in api.get(URL, {"category": "writing"}).json()["results"]] == ["mine_writing"]
    assert {t["is_builtin"] for t in api.get(URL, {"is_builtin": "false"}).json()["results"]} == {False}
    keys = [t["key"] for t in api.get(URL, {"ordering": "-key", "page_size": 100}).json()["results"]]
    assert keys == sorted(keys, reverse=True)


# --- the key rule: unique per owner and among shared templates; your own first ----------------------------
def test_bob_cannot_learn_that_alices_private_key_exists(api, bob_api):
    alices = create(api, key="secret_plan")

    taken = bob_api.post(URL, {"key": "secret_plan", "name": "Brief", "graph": GRAPH}, format="json")
    fresh = bob_api.post(URL, {"key": "never_used", "name": "Brief", "graph": GRAPH}, format="json")

    assert (taken.status_code, fresh.status_code) == (201, 201)  # the same answer: nothing to tell them apart
    bobs = taken.json()
    assert bobs["id"] != alices["id"] and set(bobs) == set(fresh.json())
    assert bob_api.get(f"{URL}secret_plan/").json()["id"] == bobs["id"]
    assert api.get(f"{URL}secret_plan/").json()["id"] == alices["id"]
    for client, mine in ((api, alices), (bob_api, bobs)):
        run = client.post("/api/v1/executions/", {"template": "secret_plan", "input": {"message": "hi"}},
                          format="json").json()
        assert WorkflowTemplate.objects.get(executions__id=run["execution"]["id"]).pk == UUID(mine["id"])
    # bob may even share his: alice's private one is not shared
    assert bob_api.patch(f"{URL}{bobs['id']}/", {"is_public": True}, format="json").status_code == 200


def test_a_key_is_unique_among_your_own_and_the_shared_templates(api, bob_api):
    create(api, key="brief")
    create(bob_api, key="shared_one", is_public=True)

    for key, message in (("brief", "you have a template"), ("shared_one", "public template"),
                         ("summarize", "built-in or public")):
        details = assert_error(api.post(URL, {"key": key, "name": "x", "graph": GRAPH}, format="json"), 400,
                               "validation_error")
        assert details[0]["path"] == "key" and message in details[0]["message"], details
    assert WorkflowTemplate.objects.filter(key="brief").count() == 1


def test_a_template_cannot_be_shared_under_a_key_another_shared_template_has(api, bob_api):
    bobs = create(bob_api, key="brief")
    create(api, key="brief", is_public=True)  # bob's is private: alice may share hers

    details = assert_error(bob_api.patch(f"{URL}{bobs['id']}/", {"is_public": True}, format="json"), 400,
                           "validation_error")
    assert details[0]["path"] == "is_public"
    assert not WorkflowTemplate.objects.get(pk=bobs["id"]).is_public
    # bob's own "brief" is the one his key names; alice's public one is still his by id
    assert bob_api.get(f"{URL}brief/").json()["id"] == bobs["id"]
    assert bob_api.get(URL, {"key": "brief"}).json()["count"] == 2


def test_the_database_keeps_the_key_rule(alice, bob):
    from django.db import IntegrityError, transaction

    WorkflowTemplateFactory(key="k", name="a", owner=alice, graph=GRAPH)
    WorkflowTemplateFactory(key="k", name="b", owner=bob, graph=GRAPH)  # per owner
    for fields in ({"owner": alice}, {"owner": None, "is_builtin": True, "is_public": True}):
        with pytest.raises(IntegrityError), transaction.atomic():
            WorkflowTemplateFactory(key="k" if fields["owner"] else "summarize", name="x", graph=GRAPH,
                                    **fields)
    WorkflowTemplate.objects.filter(owner=alice, key="k").update(is_public=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowTemplate.objects.filter(owner=bob, key="k").update(is_public=True)
