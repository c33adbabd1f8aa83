"""API keys over /api/v1/keys/: named, per user, shown once, stored hashed, scoped, revocable, expiring, with their
last use noted at most once a minute; `Bearer` and `Token` both work wherever a token does."""
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from core.cache import hot_reads
from keys.models import ApiToken
from tests.factories import ApiTokenFactory
from tests.test_api_tokens import websocket_accepts
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db


def make_key(api, **body) -> dict:
    response = api.post("/api/v1/keys/", {"name": "ci", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def client_with(key: str, keyword: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
    return client


def test_a_new_key_is_shown_once_and_stored_only_as_its_digest(api, alice):
    made = make_key(api, scopes=["read", "chat"])

    assert made["name"] == "ci" and made["scopes"] == ["chat", "read"] and made["active"] is True
    assert made["prefix"] == made["key"][:8] and made["last_used_at"] is None
    listed = api.get("/api/v1/keys/").json()["results"]
    assert [row["id"] for row in listed] == [made["id"]] and "key" not in listed[0]
    row = ApiToken.objects.get()
    assert row.user == alice and made["key"] not in (row.digest, row.prefix, row.name)


@pytest.mark.parametrize("keyword", ["Bearer", "Token"])
def test_a_key_works_as_bearer_or_token(api, keyword):
    key = make_key(api)["key"]
    assert client_with(key, keyword).get("/api/v1/executions/").status_code == 200
    assert client_with(key + "x", keyword).get("/api/v1/executions/").status_code == 401


def test_a_key_may_do_only_what_its_scopes_allow(api):
    reader = client_with(make_key(api, scopes=["read"])["key"])
    chatter = client_with(make_key(api, scopes=["chat"])["key"])

    assert reader.get("/api/v1/conversations/").status_code == 200
    refused = reader.post("/api/v1/chat/", {"message": "hello"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert "chat" in refused.json()["error"]["message"]
    assert chatter.post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201
    assert chatter.get("/api/v1/executions/").status_code == 403  # reading needs `read`
    assert chatter.post("/api/v1/executions/", {"template": "universal_chat", "input": {"message": "hi"}},
                        format="json").status_code == 403  # runs need `runs`


def test_only_a_key_with_every_scope_manages_keys(api):
    narrow = client_with(make_key(api, scopes=["read", "chat", "runs"])["key"])
    full = client_with(make_key(api)["key"])

    assert narrow.post("/api/v1/keys/", {"name": "wider"}, format="json").status_code == 403
    assert full.post("/api/v1/keys/", {"name": "another"}, format="json").status_code == 201
    assert ApiToken.objects.count() == 3


@pytest.mark.django_db(transaction=True)  # the websocket reads from another thread
def test_a_revoked_key_is_refused_at_once_and_both_changes_are_audited(api, alice):
    made = make_key(api)
    client = client_with(made["key"])
    assert client.get("/api/v1/executions/").status_code == 200

    assert api.delete(f"/api/v1/keys/{made['id']}/").status_code == 204

    assert client.get("/api/v1/executions/").status_code == 401
    assert async_to_sync(websocket_accepts)(made["key"]) is False
    listed = api.get("/api/v1/keys/").json()["results"][0]
    assert listed["active"] is False and listed["revoked_at"] is not None
    rows = list(AuditEvent.objects.filter(action__startswith="api_key.").order_by("id"))
    assert [(r.action, r.target_id, r.actor_id) for r in rows] == [
        ("api_key.created", made["id"], alice.pk), ("api_key.revoked", made["id"], alice.pk)]
    assert all(made["key"] not in str(r.data) for r in rows)
    assert api.delete(f"/api/v1/keys/{made['id']}/").status_code == 204  # again: nothing more happens
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 1


def test_an_expired_key_is_refused(api):
    made = make_key(api, expires_at=(timezone.now() + timedelta(hours=1)).isoformat())
    client = client_with(made["key"])
    assert client.get("/api/v1/executions/").status_code == 200

    ApiToken.objects.filter(uid=made["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))  # the clock moved
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)

    assert client.get("/api/v1/executions/").status_code == 401


def test_a_key_works_until_the_instant_it_expires_and_not_at_it(api, monkeypatch):
    """Expiry is the first instant the key no longer works, on every reader alike: the request lookup (the memo of
    a key found live a moment before too) and the listing's `active`."""
    expires = timezone.now() + timedelta(hours=1)
    made = make_key(api, expires_at=expires.isoformat())
    client = client_with(made["key"])
    clock = {"now": expires - timedelta(microseconds=1)}
    monkeypatch.setattr(timezone, "now", lambda: clock["now"])
    assert client.get("/api/v1/executions/").status_code == 200
    assert api.get("/api/v1/keys/").json()["results"][0]["active"] is True

    clock["now"] = expires

    assert client.get("/api/v1/executions/").status_code == 401
    assert api.get("/api/v1/keys/").json()["results"][0]["active"] is False


def test_bob_can_neither_see_nor_revoke_alices_key(api, bob_api):
    made = make_key(api)

    assert bob_api.get("/api/v1/keys/").json()["results"] == []
    assert bob_api.delete(f"/api/v1/keys/{made['id']}/").status_code == 404
    assert client_with(made["key"]).get("/api/v1/executions/").status_code == 200


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "scopes": ["admin"]}, "scopes"),
    ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"scopes": ["read"]}, "name"),
    ({"name": "x", "key": "mine"}, "key"),
])
def test_bad_input_is_a_400_and_makes_no_key(api, body, field):
    response = api.post("/api/v1/keys/", body, format="json")

    assert response.status_code == 400
    assert field in {item["path"].split(".")[0] for item in response.json()["error"]["details"]}
    assert not ApiToken.objects.exists()


def test_last_use_is_written_at_most_once_a_minute(api):
    made = make_key(api)
    client = client_with(made["key"])

    def token_updates() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/v1/executions/").status_code == 200
        return sum(1 for q in queries.captured_queries
                   if q["sql"].startswith("UPDATE") and "chatter_project_apitoken" in q["sql"])

    assert token_updates() == 1
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    assert token_updates() == 0  # within the minute: not even a statement
    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))  # a minute and more later
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    assert token_updates() == 1
    assert ApiToken.objects.get().last_used_at > first


@pytest.mark.django_db(transaction=True)
def test_a_websocket_needs_a_key_with_the_read_scope(api):
    assert async_to_sync(websocket_accepts)(make_key(api, scopes=["read"])["key"]) is True
    assert async_to_sync(websocket_accepts)(make_key(api, scopes=["gateway"])["key"]) is False


def test_tokens_from_auth_token_have_every_scope(alice):
    key = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "alice-password"}).json()["token"]
    client = client_with(key, "Token")

    assert client.post("/api/v1/chat/", {"message": "hi"}, format="json").status_code == 201
    assert client.post("/api/v1/keys/", {"name": "made by a token"}, format="json").status_code == 201


def test_usage_is_reported_by_key(api, alice):
    ci = ApiTokenFactory(user=alice, name="ci")
    ci_key = ci.key
    by_key = client_with(ci_key)
    assert by_key.post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201
    assert by_key.post("/api/v1/chat/", {"message": "hello again"}, format="json").status_code == 201
    assert api.post("/api/v1/chat/", {"message": "by session"}, format="json").status_code == 201

    report = api.get("/api/v1/analytics/usage/?group_by=key").json()

    rows = {row["key_id"]: row for row in report["results"]}
    assert set(rows) == {str(ci.uid), None}
    runs = WorkflowExecution.objects.filter(api_key=ci)
    assert (rows[str(ci.uid)]["key_name"], rows[str(ci.uid)]["key_prefix"]) == ("ci", ci.prefix)
    assert rows[str(ci.uid)]["executions"] == 2 and rows[str(ci.uid)]["messages"] == 4
    assert rows[str(ci.uid)]["total_tokens"] == sum(run.total_tokens for run in runs)
    assert Decimal(rows[str(ci.uid)]["cost"]) == sum(run.cost for run in runs)
    assert rows[None]["executions"] == 1
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out)  # the rollups by key equal the runs'
    assert "zero drift" in out.getvalue()


def test_runs_can_be_listed_by_the_key_that_started_them(api, alice):
    ci = ApiTokenFactory(user=alice, name="ci")
    ci_key = ci.key
    client_with(ci_key).post("/api/v1/chat/", {"message": "by key"}, format="json")
    api.post("/api/v1/chat/", {"message": "by session"}, format="json")

    listed = api.get(f"/api/v1/executions/?api_key={ci.uid}").json()

    assert listed["count"] == 1
    assert WorkflowExecution.objects.get(pk=listed["results"][0]["id"]).input_data["message"] == "by key"


def test_deleting_a_used_key_in_the_admin_revokes_it_and_keeps_its_usage(api, alice, client, staff):
    ci = ApiTokenFactory(user=alice, name="ci")
    by_key = client_with(ci.key)
    assert by_key.post("/api/v1/chat/", {"message": "hello"}, format="json").status_code == 201
    client.force_login(staff)
    assert "Revoke the API key" in client.get(f"/admin/keys/apitoken/{ci.pk}/delete/").content.decode()

    response = client.post(f"/admin/keys/apitoken/{ci.pk}/delete/", {"post": "yes"}, follow=True)

    assert [str(note) for note in response.context["messages"]] == [f"The API key “{ci}” was revoked."]
    assert by_key.get("/api/v1/executions/").status_code == 401
    ci.refresh_from_db()  # kept, revoked, with the runs and usage it made
    assert ci.revoked_at is not None and WorkflowExecution.objects.filter(api_key=ci).count() == 1
    audit_queue_flush()
    assert list(AuditEvent.objects.filter(action="api_key.revoked").values_list("target_id", "actor_id")) == [
        (str(ci.uid), staff.pk)]
    [row] = [row for row in api.get("/api/v1/analytics/usage/?group_by=key").json()["results"] if row["key_id"]]
    assert (row["key_id"], row["executions"]) == (str(ci.uid), 1)
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out)
    assert "zero drift" in out.getvalue()


def test_the_admin_revokes_selected_keys_and_deletes_none(alice, client, staff):
    live, revoked = ApiTokenFactory(user=alice), ApiTokenFactory(user=alice)
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    client.force_login(staff)

    offered = client.get("/admin/keys/apitoken/").context["action_form"].fields["action"].choices
    response = client.post("/admin/keys/apitoken/", {
        "action": "revoke_keys", "_selected_action": [str(live.pk), str(revoked.pk)]}, follow=True)

    assert [name for name, _ in offered] == ["", "revoke_keys"]
    assert [str(note) for note in response.context["messages"]] == ["1 API key(s) revoked; 1 already revoked, skipped."]
    assert ApiToken.objects.filter(revoked_at__isnull=False).count() == 2
    audit_queue_flush()
    assert list(AuditEvent.objects.filter(action="api_key.revoked").values_list("target_id", flat=True)) == [
        str(live.uid)]
