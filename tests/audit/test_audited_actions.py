"""Every sensitive action leaves its audit row, written with the action (a refused action leaves none), and the
chain verifies afterwards (I7)."""
import pytest

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import audit_queue_flush
from workflows.services.run_requests import ChatRequest

pytestmark = pytest.mark.django_db
NODES = [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}]
EDGES = [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]


def trail(**filters) -> list[tuple[str, str]]:
    audit_queue_flush()  # what runs queued (PostgreSQL), as a read of the trail sees it
    return list(AuditEvent.objects.filter(**filters).order_by("id").values_list("action", "target_id"))


def test_definition_changes_are_audited_with_their_actor(api, alice):
    definition = api.post("/api/v1/workflows/definitions/", {"name": "D", "nodes": NODES, "edges": EDGES},
                          format="json").json()
    api.patch(f"/api/v1/workflows/definitions/{definition['id']}/", {"name": "D2"}, format="json")
    api.delete(f"/api/v1/workflows/definitions/{definition['id']}/")

    rows = AuditEvent.objects.filter(action__startswith="definition.").order_by("id")
    assert [(r.action, r.target_id) for r in rows] == [
        ("definition.created", definition["id"]), ("definition.updated", definition["id"]),
        ("definition.deleted", definition["id"])]
    assert {r.actor_id for r in rows} == {alice.pk} and {r.actor_type for r in rows} == {"user"}
    assert rows[1].data["fields"] == ["name"] and rows[1].data["graph_changed"] is False
    assert audit_chain_verify().valid


def test_template_changes_are_audited(api):
    template = api.post("/api/v1/workflows/templates/", {"key": "mine", "name": "M", "graph": {
        "nodes": NODES, "edges": EDGES}}, format="json").json()
    api.patch(f"/api/v1/workflows/templates/{template['id']}/", {"is_public": True}, format="json")
    api.delete(f"/api/v1/workflows/templates/{template['id']}/")

    assert [a for a, _ in trail(action__startswith="template.")] == [
        "template.created", "template.updated", "template.deleted"]
    assert audit_chain_verify().valid


def test_schedule_changes_are_audited(api):
    schedule = api.post("/api/v1/schedules/", {"name": "S", "template": "summarize", "cron": "0 7 * * *",
                                                "input": {"message": "x"}}, format="json").json()
    api.patch(f"/api/v1/schedules/{schedule['id']}/", {"enabled": False}, format="json")
    api.delete(f"/api/v1/schedules/{schedule['id']}/")

    rows = list(AuditEvent.objects.filter(action__startswith="schedule.").order_by("id"))
    assert [r.action for r in rows] == ["schedule.created", "schedule.updated", "schedule.deleted"]
    assert rows[0].data["cron"] == "0 7 * * *" and rows[0].data["template"] == "summarize"
    assert audit_chain_verify().valid


def test_a_refused_change_leaves_no_audit_row(api, bob_api):
    definition = api.post("/api/v1/workflows/definitions/", {"name": "D", "nodes": NODES, "edges": EDGES,
                                                              "is_public": True}, format="json").json()
    before = AuditEvent.objects.count()
    api.patch(f"/api/v1/workflows/definitions/{definition['id']}/", {"edges": [{"source": "start", "target": "x"}]},
              format="json")
    bob_api.delete(f"/api/v1/workflows/definitions/{definition['id']}/")
    api.post("/api/v1/schedules/", {"name": "S", "template": "summarize", "cron": "bad cron"}, format="json")

    assert not AuditEvent.objects.filter(action__in=(
        "definition.updated", "definition.deleted", "schedule.created")).exists()
    assert AuditEvent.objects.count() - before == AuditEvent.objects.filter(action="access.denied").count()


def test_a_run_is_audited_from_start_to_end_with_its_tool_calls(api, alice):
    turn = api.post("/api/v1/chat/", {"message": "What is 12*7?"}).json()
    execution_id = turn["execution"]["id"]

    audit_queue_flush()
    rows = list(AuditEvent.objects.filter(target_id=execution_id).order_by("id"))
    assert [r.action for r in rows] == ["execution.started", "tool.called", "execution.completed"]
    assert {r.actor_id for r in rows} == {alice.pk}
    assert {r.correlation_id for r in rows} == {turn["execution"]["correlation_id"]}
    assert rows[1].data["tool"] == "calculator" and rows[1].data["ok"] is True
    assert rows[2].data["total_tokens"] == turn["execution"]["total_tokens"]
    assert audit_chain_verify().valid


def test_cancelling_and_failing_runs_are_audited(api, alice):
    from workflows.services.runs import execution_create

    pending = execution_create(ChatRequest(owner=alice, message="later", mode="background"))
    api.post(f"/api/v1/executions/{pending.pk}/cancel/")
    assert [a for a, _ in trail(target_id=str(pending.pk))] == ["execution.cancel_requested",
                                                                 "execution.cancelled"]

    limited = api.post("/api/v1/executions/", {"template": "tool_agent", "input": {"message": "What is 2*3?"},
                                               "config": {"max_total_tokens": 1}}, format="json").json()
    actions = [a for a, _ in trail(target_id=limited["execution"]["id"])]
    assert "limit.exceeded" in actions and actions[-1] == "execution.failed"
    assert audit_chain_verify().valid


def test_too_many_runs_is_audited_as_a_limit(api, alice, settings):
    from workflows.services.runs import execution_create

    settings.CHATTER_MAX_CONCURRENT_RUNS = 1
    execution_create(ChatRequest(owner=alice, message="one", mode="background"))
    assert api.post("/api/v1/chat/", {"message": "two"}).status_code == 429

    row = AuditEvent.objects.get(action="limit.exceeded")
    assert row.actor_id == alice.pk and row.data == {"limit": "max_concurrent_runs", "value": 1}
