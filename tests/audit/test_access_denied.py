"""`access.denied` audit rows for refused API requests (401/403) and websockets (4401/4404): one row each for a
user; for unauthenticated clients one row per source address, status and minute, with the count, written once
the minute is over."""
from datetime import datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.selectors import audit_chain_verify
from audit.services import access_denied_windows_close
from chatter_project.asgi import application
from tests.api.conftest import assert_error
from tests.factories import ApiTokenFactory

ORIGIN = (b"origin", b"http://127.0.0.1")


def denied() -> list[dict]:
    return list(AuditEvent.objects.filter(action="access.denied").order_by("id")
                .values("actor_id", "actor_type", "ip", "data"))


def minutes_later_denied() -> list[dict]:
    """The rows once the windows open now are over and written (as the every-minute task does)."""
    access_denied_windows_close(now=timezone.now() + timedelta(minutes=2))
    return denied()


def window(data: dict) -> dict:
    """An anonymous row's data without its window's times (checked apart)."""
    start, end = data.pop("window_start"), data.pop("window_end")
    assert datetime.fromisoformat(end) - datetime.fromisoformat(start) == timedelta(minutes=1)
    return data


@pytest.mark.django_db
def test_an_anonymous_request_is_recorded_without_its_query_string():
    response = APIClient().get("/api/v1/executions/?token=hunter2-secret")

    assert_error(response, 401, "not_authenticated")
    assert denied() == []  # counted in its minute's window until the minute is over
    [row] = minutes_later_denied()
    assert (row["actor_id"], row["actor_type"], row["ip"]) == (None, "system", "127.0.0.1")
    assert window(row["data"]) == {"status": 401, "count": 1, "first_method": "GET",
                                   "first_path": "/api/v1/executions/"}
    assert audit_chain_verify().valid


@pytest.mark.django_db
def test_a_bad_token_is_recorded():
    response = APIClient().post("/api/v1/executions/", {}, HTTP_AUTHORIZATION="Token not-a-real-token",
                                REMOTE_ADDR="203.0.113.9")

    assert_error(response, 401, "authentication_failed")
    [row] = minutes_later_denied()
    assert (row["actor_id"], row["ip"]) == (None, "203.0.113.9")
    assert window(row["data"]) == {"status": 401, "count": 1, "first_method": "POST",
                                   "first_path": "/api/v1/executions/"}


@pytest.mark.django_db
def test_a_forbidden_request_is_recorded_with_its_user(alice):
    client = APIClient()
    client.force_login(alice)

    assert_error(client.get("/api/v1/audit/verify/"), 403, "permission_denied")
    assert denied() == [{"actor_id": alice.pk, "actor_type": "user", "ip": "127.0.0.1",
                         "data": {"method": "GET", "path": "/api/v1/audit/verify/", "status": 403}}]


@pytest.mark.django_db
def test_other_errors_are_not_access_denied(alice):
    client = APIClient()
    client.force_login(alice)

    assert client.get("/api/v1/executions/not-a-uuid/").status_code == 404
    assert client.post("/api/v1/executions/", {"template": "nope", "graph": {}}).status_code == 400
    assert denied() == []


@pytest.mark.django_db
def test_it_is_recorded_although_atomic_requests_rolls_the_request_back(alice, monkeypatch):
    """Under ATOMIC_REQUESTS the handler runs inside the request's doomed transaction; the row must outlive it."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    client = APIClient()
    client.force_login(alice)

    assert_error(client.get("/api/v1/audit/verify/"), 403, "permission_denied")
    assert [row["actor_id"] for row in denied()] == [alice.pk]
    assert audit_chain_verify().valid


# --- websockets ----------------------------------------------------------------------------------------------
@pytest.fixture
async def close_db_connections():
    yield
    await sync_to_async(connections.close_all)()


async def close_code(path: str) -> int:
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    return output["code"]


@pytest.mark.django_db(transaction=True)
async def test_a_refused_websocket_is_recorded(bob, close_db_connections):
    missing = "00000000-0000-0000-0000-000000000000"
    token = await sync_to_async(lambda: ApiTokenFactory(user=bob).key)()

    assert await close_code("/ws/events/") == 4401
    assert await close_code(f"/ws/executions/{missing}/?token={token}") == 4404

    rows = await sync_to_async(denied)()
    assert rows == [  # bob's at once; the anonymous one once its minute is over
        {"actor_id": bob.pk, "actor_type": "user", "ip": None,
         "data": {"method": "WEBSOCKET", "path": f"/ws/executions/{missing}/", "status": 4404}},
    ]
    rows = await sync_to_async(minutes_later_denied)()
    assert rows[0] == {"actor_id": bob.pk, "actor_type": "user", "ip": None,
                       "data": {"method": "WEBSOCKET", "path": f"/ws/executions/{missing}/", "status": 4404}}
    assert (rows[1]["actor_id"], rows[1]["ip"]) == (None, None) and len(rows) == 2
    assert window(rows[1]["data"]) == {"status": 4401, "count": 1, "first_method": "WEBSOCKET",
                                       "first_path": "/ws/events/"}
    assert (await sync_to_async(audit_chain_verify)()).valid
