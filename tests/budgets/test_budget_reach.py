"""Whom a budget binds. A user's budget (on themselves, their own key, a template they can see) binds only their own
runs and counts only their own spend; a budget naming what they may not govern (another's key or user, a group,
everyone, a template they cannot see) is a 400 and no row. A budget staff set binds every run in its scope, and its
429 shows the runs it stops its id and limit, never what others spent; its alerts go to staff, not to the runs'
owners. Every path that spends is checked: chat, executions, the gateway, /langgraph/ runs, schedules."""
from decimal import Decimal

import httpx
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from budgets.models import Budget
from tests.factories import ApiTokenFactory, GroupFactory, WorkflowTemplateFactory
from tests.webhook_receiver import RECEIVER_NETWORKS, SECRET, receiver  # noqa: F401 - a fixture
from webhooks.models import WebhookDelivery
from workflows.models import ExecutionEvent, WorkflowExecution, WorkflowSchedule, WorkflowTemplate
from workflows.services.schedules import schedules_run_due

HELLO = [{"role": "user", "content": "hello"}]
# Every path a run spends by, as a client calls it: (URL path, body); spend() sends the key as each reads it
PATHS = {
    "chat": ("/api/v1/chat/", {"message": "hello"}),
    "executions": ("/api/v1/executions/", {"template": "universal_chat", "input": {"message": "hello"}}),
    "gateway": ("/v1/chat/completions", {"model": "local-echo-1", "messages": HELLO}),
    "langgraph": ("/langgraph/runs/wait", {"assistant_id": "universal_chat", "input": {"messages": HELLO}}),
}


def set_budget(client, **body) -> dict:
    response = client.post("/api/v1/budgets/", {"period": "day", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def spend(server, key: str, path: str) -> httpx.Response:
    url, body = PATHS[path]
    return httpx.post(f"{server.base_url}{url}", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}", "x-api-key": key})


def schedule_ticks(*keys_by_owner) -> set:
    """Each owner's schedule of universal_chat, due now: the owners whose scheduled run started."""
    for key in keys_by_owner:
        response = key_client(key).post("/api/v1/schedules/", {
            "name": "tick", "template": "universal_chat", "cron": "* * * * *", "timezone": "UTC",
            "input": {"message": "hello"}}, format="json")
        assert response.status_code == 201, response.content
    due = max(WorkflowSchedule.objects.values_list("next_run_at", flat=True))
    return {execution.owner.username for execution in schedules_run_due(now=due)}


@pytest.mark.django_db(transaction=True)
def test_bobs_budgets_bind_his_own_runs_on_every_path_and_never_alices(shared_daphne_server, alice, bob, bob_api):
    """The attack: bob sets every budget he may at a limit nothing fits in. Alice's runs go on, on every path;
    bob's are refused, each 429 naming one of his own budgets."""
    server = shared_daphne_server()
    alice_key = ApiTokenFactory(user=alice).key
    bob_token = ApiTokenFactory(user=bob)
    bob_key = bob_token.key
    bobs = {set_budget(bob_api, scope=scope, target_id=target, limit_tokens=1)["id"] for scope, target in (
        ("user", ""), ("key", str(bob_token.uid)), ("template", "universal_chat"))}

    for path in PATHS:
        by_alice, by_bob = spend(server, alice_key, path), spend(server, bob_key, path)

        assert by_alice.status_code in (200, 201), (path, by_alice.text)
        assert by_bob.status_code == 429 and "budget_exceeded" in by_bob.text, (path, by_bob.text)
        assert sum(budget_id in by_bob.text for budget_id in bobs) == 1, (path, by_bob.text)
    assert schedule_ticks(alice_key, bob_key) == {"alice"}
    assert not WorkflowExecution.objects.filter(owner=bob).exists()


@pytest.mark.django_db(transaction=True)
def test_a_key_budget_binds_the_runs_made_with_that_key_on_every_path_and_no_other_key(shared_daphne_server, bob,
                                                                                       bob_api):
    """A run records the key that started it, on every path (/langgraph/'s too): so the key's budget binds it, and
    the owner's other keys go on."""
    server = shared_daphne_server()
    capped_token = ApiTokenFactory(user=bob)
    capped = capped_token.key
    free = ApiTokenFactory(user=bob).key
    budget = set_budget(bob_api, scope="key", target_id=str(capped_token.uid), limit_tokens=1)

    for path in PATHS:
        by_free, by_capped = spend(server, free, path), spend(server, capped, path)

        assert by_free.status_code in (200, 201), (path, by_free.text)
        assert by_capped.status_code == 429 and budget["id"] in by_capped.text, (path, by_capped.text)
    assert WorkflowExecution.objects.filter(owner=bob).count() == len(PATHS)
    assert not WorkflowExecution.objects.filter(owner=bob, api_key__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_staff_budget_on_everyone_binds_every_path_and_its_429_shows_its_id_and_limit_only(shared_daphne_server,
                                                                                              alice, bob, staff):
    server = shared_daphne_server()
    alice_key, bob_key = ApiTokenFactory(user=alice).key, ApiTokenFactory(user=bob).key
    admin = APIClient()
    admin.force_login(staff)
    # Bob spends first under a staff budget that has room: its spend is then other users' for alice.
    everyone = set_budget(admin, scope="global", limit_tokens=10_000, mode="soft")
    assert spend(server, bob_key, "chat").status_code == 201
    Budget.objects.filter(pk=everyone["id"]).update(mode="hard", limit_tokens=1)
    spent = admin.get(f"/api/v1/budgets/{everyone['id']}/").json()["spent_tokens"]
    assert spent > 0

    for path in PATHS:
        refused = spend(server, alice_key, path)

        assert refused.status_code == 429, (path, refused.text)
        body = refused.json()  # each surface's own error shape: LangGraph's {"detail"}, else {"error"}
        message = body["detail"] if path == "langgraph" else body["error"]["message"]
        assert message == f"budget {everyone['id']} (global *: 1 tokens per day (hard)) has no room for this run"
        assert "spent" not in refused.text
    assert schedule_ticks(alice_key) == set()
    assert not WorkflowExecution.objects.filter(owner=alice).exists()


@pytest.mark.django_db
def test_staff_budgets_on_a_group_a_template_a_key_and_a_user_bind_whom_they_name(alice, bob, staff, api, bob_api):
    team = GroupFactory(name="team", members=[alice])
    token = ApiTokenFactory(user=alice)
    key = token.key
    admin = APIClient()
    admin.force_login(staff)
    chat = {"message": "hello"}

    group = set_budget(admin, scope="group", target_id=str(team.pk), limit_tokens=1)
    refused = api.post("/api/v1/chat/", chat, format="json")
    assert refused.status_code == 429 and group["id"] in refused.json()["error"]["message"]
    assert bob_api.post("/api/v1/chat/", chat, format="json").status_code == 201  # not a member
    admin.delete(f"/api/v1/budgets/{group['id']}/")

    template = set_budget(admin, scope="template", target_id="universal_chat", limit_tokens=1)
    refused = bob_api.post("/api/v1/chat/", chat, format="json")
    assert refused.status_code == 429 and template["id"] in refused.json()["error"]["message"]
    admin.delete(f"/api/v1/budgets/{template['id']}/")

    on_key = set_budget(admin, scope="key", target_id=str(token.uid), limit_tokens=1)
    refused = key_client(key).post("/api/v1/chat/", chat, format="json")
    assert refused.status_code == 429 and on_key["id"] in refused.json()["error"]["message"]
    assert api.post("/api/v1/chat/", chat, format="json").status_code == 201  # her session is not that key

    on_bob = set_budget(admin, scope="user", target_id=str(bob.pk), limit_tokens=1)
    refused = bob_api.post("/api/v1/chat/", chat, format="json")
    assert refused.status_code == 429 and on_bob["id"] in refused.json()["error"]["message"]
    assert api.post("/api/v1/chat/", chat, format="json").status_code == 201


@pytest.mark.django_db
@pytest.mark.usefixtures("clear_of_midnight")  # the day's spend is read on the day it was spent
@pytest.mark.parametrize("scope", ["user", "key", "template"])
def test_a_users_soft_budget_counts_only_their_own_spend(alice, bob, api, bob_api, scope):
    token = ApiTokenFactory(user=bob)
    key = token.key
    target = {"user": "", "key": str(token.uid), "template": "universal_chat"}[scope]
    budget = set_budget(bob_api, scope=scope, target_id=target, limit_tokens=1, mode="soft")

    assert api.post("/api/v1/chat/", {"message": "hello from alice, a little longer"}, format="json").status_code == 201
    assert key_client(key).post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201

    shown = bob_api.get(f"/api/v1/budgets/{budget['id']}/").json()
    (bobs,) = WorkflowExecution.objects.filter(owner=bob)
    assert shown["spent_tokens"] == bobs.total_tokens > 0 and Decimal(shown["spent_usd"]) == bobs.cost


@pytest.mark.django_db
@pytest.mark.usefixtures("clear_of_midnight")  # the day's spend is read on the day it was spent
def test_a_staff_soft_budget_on_everyone_counts_everyones_spend(alice, staff, api, bob_api):
    admin = APIClient()
    admin.force_login(staff)
    budget = set_budget(admin, scope="global", limit_tokens=1, mode="soft")

    api.post("/api/v1/chat/", {"message": "hello"}, format="json")
    bob_api.post("/api/v1/chat/", {"message": "hello"}, format="json")

    shown = admin.get(f"/api/v1/budgets/{budget['id']}/").json()
    runs = WorkflowExecution.objects.all()
    assert len(runs) == 2 and shown["spent_tokens"] == sum(run.total_tokens for run in runs)


@pytest.mark.django_db
@pytest.mark.parametrize("scope, target, field", [
    ("user", "alice", "target_id"),
    ("user", "99999", "target_id"),
    ("key", "alices", "target_id"),
    ("key", "00000000-0000-0000-0000-000000000000", "target_id"),
    ("key", "not-a-key", "target_id"),
    ("template", "alices_private", "target_id"),
    ("template", "no_such_template", "target_id"),
    ("group", "bobs_team", "scope"),
    ("global", "", "scope"),
])
def test_it_refuses_a_budget_on_what_the_user_may_not_govern_with_a_400_and_no_row(alice, bob, bob_api, scope,
                                                                                   target, field):
    """Bob governs his own spend only: not alice, nor her key or private template, nor a group (his own included:
    it binds its other members) nor everyone. Another's and a missing one are refused alike."""
    team = GroupFactory(name="team", members=[bob])
    private = WorkflowTemplateFactory(key="private", name="private", owner=alice, graph={})
    target = {"alice": str(alice.pk), "alices": str(ApiTokenFactory(user=alice).uid),
              "alices_private": str(private.pk), "bobs_team": str(team.pk)}.get(target, target)

    response = bob_api.post("/api/v1/budgets/", {"scope": scope, "target_id": target, "period": "day",
                                                 "limit_tokens": 1}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and [item["path"] for item in error["details"]] == [field]
    assert not Budget.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_users_budget_alerts_on_their_own_spend_only(alice, bob, api, bob_api, receiver, settings):
    settings.CHATTER_WEBHOOK_SECRET = SECRET
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS  # the test receivers, on 127.0.0.1
    hook = receiver()
    budget = set_budget(bob_api, scope="template", target_id="universal_chat", limit_tokens=1, mode="soft",
                        thresholds=[1], webhook_url=hook.url)  # any spend counted crosses it

    assert api.post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201
    assert not hook.received and not WebhookDelivery.objects.exists()  # alice's spend is not his to hear of

    assert bob_api.post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201
    (payload,) = hook.verified()
    (bobs,) = WorkflowExecution.objects.filter(owner=bob)
    assert payload["budget"]["id"] == budget["id"] and payload["spent"] == str(bobs.total_tokens)


@pytest.mark.django_db(transaction=True)
def test_a_staff_budgets_crossing_reaches_staff_not_the_runs_owner(alice, staff, api, receiver, settings):
    """Alice's run crosses a threshold of a staff budget on everyone: its spend is everyone's, so neither her run's
    events nor her audit trail show it; staff's webhook and audit trail do."""
    settings.CHATTER_WEBHOOK_SECRET = SECRET
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS  # the test receivers, on 127.0.0.1
    hook = receiver()
    admin = APIClient()
    admin.force_login(staff)
    budget = set_budget(admin, scope="global", limit_tokens=1, mode="soft", thresholds=[1], webhook_url=hook.url)

    response = api.post("/api/v1/chat/", {"message": "hello"}, format="json")

    assert response.status_code == 201
    events = api.get(f"/api/v1/executions/{response.json()['execution']['id']}/events/").json()
    assert [event["event"] for event in events["results"]][-1] == "workflow_completed"
    assert "budget_threshold" not in {event["event"] for event in events["results"]}
    assert not ExecutionEvent.objects.filter(event="budget_threshold").exists()
    mine = api.get("/api/v1/audit/events/", {"page_size": 100}).json()["results"]
    assert mine and "budget.threshold" not in {row["action"] for row in mine}
    (payload,) = hook.verified()
    assert payload["budget"]["id"] == budget["id"] and payload["threshold"] == 1
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    (row,) = AuditEvent.objects.filter(action="budget.threshold")
    assert (row.actor, row.target_id) == (None, budget["id"])
    staffs = admin.get("/api/v1/audit/events/", {"action": "budget.threshold"}).json()["results"]
    assert [item["target_id"] for item in staffs] == [budget["id"]]


BEFORE = [("budgets", "0003_webhook_delivery_moved")]
AFTER = [("budgets", "0004_budget_set_by_staff")]


@pytest.mark.django_db(transaction=True)
def test_budgets_set_before_bind_as_their_setter_may(alice, bob, staff, api):
    """Budgets set before whom a budget binds was kept: a user's template budget binds only them now, staff's still
    binds everyone."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        old = executor.loader.project_state(BEFORE).apps.get_model("budgets", "Budget")
        template_id = str(WorkflowTemplate.objects.get(key="universal_chat", is_builtin=True).pk)
        bobs, staffs = (old.objects.create(owner_id=owner.pk, scope="template", target_id=template_id, period="day",
                                           limit_tokens=1, mode=mode)
                        for owner, mode in ((bob, "hard"), (staff, "soft")))
        executor.loader.build_graph()
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert api.post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201

    admin = APIClient()
    admin.force_login(staff)
    shown = {budget["id"]: budget["spent_tokens"] for budget in admin.get("/api/v1/budgets/").json()["results"]}
    assert shown == {str(bobs.pk): 0, str(staffs.pk): WorkflowExecution.objects.get().total_tokens}
