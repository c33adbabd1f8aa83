"""GET /api/v1/audit/events/ (own rows; staff all) and GET /api/v1/audit/verify/ (staff): docs/api/rest.md."""
import pytest
from django.db import connection
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import REDACTED, audit_record
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db
EVENTS = "/api/v1/audit/events/"
VERIFY = "/api/v1/audit/verify/"
FIELDS = {"id", "created_at", "actor", "actor_username", "actor_type", "action", "target_type", "target_id",
          "correlation_id", "ip", "data", "prev_hash", "hash"}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def trail(alice, bob) -> dict[str, AuditEvent]:
    return {
        "alice_created": audit_record(action="definition.created", actor=alice, target_type="workflowdefinition",
                                      target_id="d-1", correlation_id="c-1", ip="10.0.0.7",
                                      data={"name": "Mine", "api_key": "sk-abc"}),
        "alice_ran": audit_record(action="execution.started", actor=alice, target_type="workflowexecution",
                                  target_id="e-1", correlation_id="c-2"),
        "bob_ran": audit_record(action="execution.started", actor=bob, target_type="workflowexecution",
                                target_id="e-2", correlation_id="c-3"),
        "system": audit_record(action="execution.failed", target_type="workflowexecution", target_id="e-2",
                               correlation_id="c-3"),
    }


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_a_user_sees_only_their_own_rows_newest_first(alice, trail):
    response = client_for(alice).get(EVENTS)

    assert ids(response) == [trail["alice_ran"].pk, trail["alice_created"].pk]
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    row = body["results"][1]
    assert set(row) == FIELDS
    created = trail["alice_created"]
    assert row == {
        "id": created.pk, "created_at": row["created_at"], "actor": alice.pk, "actor_username": "alice",
        "actor_type": "user", "action": "definition.created", "target_type": "workflowdefinition",
        "target_id": "d-1", "correlation_id": "c-1", "ip": "10.0.0.7", "data": {"name": "Mine", "api_key": REDACTED},
        "prev_hash": created.prev_hash, "hash": created.hash,
    }
    assert row["created_at"].endswith("Z")


def test_staff_see_every_row(staff, trail):
    assert ids(client_for(staff).get(EVENTS, {"ordering": "id"})) == [event.pk for event in trail.values()]


def test_another_users_row_is_a_404(alice, trail):
    client = client_for(alice)
    assert client.get(f"{EVENTS}{trail['alice_ran'].pk}/").json()["id"] == trail["alice_ran"].pk
    assert_error(client.get(f"{EVENTS}{trail['bob_ran'].pk}/"), 404, "not_found")
    assert_error(client.get(f"{EVENTS}{trail['system'].pk}/"), 404, "not_found")
    assert_error(client.get(f"{EVENTS}not-a-number/"), 404, "not_found")


@pytest.mark.parametrize("query, expected", [
    ({"action": "execution.started"}, ["bob_ran", "alice_ran"]),
    ({"target_type": "workflowexecution", "target_id": "e-2"}, ["system", "bob_ran"]),
    ({"correlation_id": "c-1"}, ["alice_created"]),
    ({"actor_type": "system"}, ["system"]),
    ({"ordering": "action,-id"}, ["alice_created", "system", "bob_ran", "alice_ran"]),
])
def test_staff_filter_and_order_the_trail(staff, trail, query, expected):
    assert ids(client_for(staff).get(EVENTS, query)) == [trail[name].pk for name in expected]


def test_filters_never_reach_beyond_the_users_own_rows(alice, trail):
    assert ids(client_for(alice).get(EVENTS, {"correlation_id": "c-3"})) == []


def test_it_pages_the_trail(alice):
    for n in range(3):
        audit_record(action="execution.started", actor=alice, target_id=str(n))
    body = client_for(alice).get(EVENTS, {"page_size": 2}).json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]


def test_staff_verify_a_valid_chain(staff, trail):
    response = client_for(staff).get(VERIFY)

    assert response.status_code == 200
    assert response.json() == {"valid": True, "checked": 4, "first_bad": None, "last_hash": trail["system"].hash}


def test_verify_names_the_first_bad_row(staff, trail):
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {AuditEvent._meta.db_table} SET data = %s WHERE id = %s",
                       ['{"name": "Not mine"}', trail["alice_created"].pk])

    body = client_for(staff).get(VERIFY).json()

    assert (body["valid"], body["checked"], body["last_hash"]) == (False, 1, None)
    assert body["first_bad"]["id"] == trail["alice_created"].pk
    assert body["first_bad"]["reason"] == "content_changed"
    assert f"row #{trail['alice_created'].pk}" in body["first_bad"]["message"]


def test_verify_is_for_staff_only(alice, trail):
    assert_error(client_for(alice).get(VERIFY), 403, "permission_denied")
    assert_error(APIClient().get(VERIFY), 401, "not_authenticated")


def test_an_anonymous_client_sees_nothing(trail):
    assert_error(APIClient().get(EVENTS), 401, "not_authenticated")
