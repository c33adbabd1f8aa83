"""A flood of anonymous refusals: 401s and refused websocket handshakes from unauthenticated
clients make one `access.denied` row per source address, status and minute, with the exact count, and the chain
still verifies; a user's refusal is still one row each, at once."""
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from audit.models import AuditEvent
from audit.services import access_denied_windows_close

pytestmark = pytest.mark.django_db(transaction=True)

HTTP_FLOOD, WEBSOCKET_FLOOD, OTHER_SOURCE_FLOOD = 200, 60, 60


def refused_handshake(url: str) -> int:
    with connect(url, origin="http://127.0.0.1", open_timeout=10) as websocket:
        try:
            websocket.recv(timeout=10)
        except ConnectionClosed as closed:
            return closed.rcvd.code
    raise AssertionError("the socket was not closed")


def test_a_flood_of_anonymous_refusals_makes_one_row_per_source_status_and_minute(alice, shared_daphne_server):
    server = shared_daphne_server()  # the windows are rows: what the server counted before went with the last flush
    started = timezone.now()

    # One client for the flood's threads (httpx's clients are thread-safe): each new one loads the CA bundle, about
    # 40 ms of CPU, more than the refusal it would send costs the server.
    anonymous = httpx.Client(base_url=server.base_url, timeout=30)

    def anonymous_request(number: int) -> int:
        path = ("/api/v1/executions/", "/api/v1/conversations/", f"/api/v1/executions/{number}/")[number % 3]
        return anonymous.get(path).status_code

    def other_source(number: int) -> int:
        try:
            return APIClient().post("/api/v1/chat/", {"message": "hi"}, HTTP_AUTHORIZATION=f"Token forged-{number}",
                                    REMOTE_ADDR="203.0.113.9").status_code
        finally:
            connections.close_all()  # this pool thread's own connection (the test database is dropped at the end)

    with anonymous, ThreadPoolExecutor(8) as pool:
        http = list(pool.map(anonymous_request, range(HTTP_FLOOD)))
        websockets = list(pool.map(refused_handshake, [f"{server.ws_url}/ws/events/"] * WEBSOCKET_FLOOD))
        other = list(pool.map(other_source, range(OTHER_SOURCE_FLOOD)))
    assert set(http) == {401} and set(websockets) == {4401} and set(other) == {401}

    # A user's refusals: one row each, at once (alice may not verify the chain; staff only).
    user = APIClient()
    user.force_login(alice)
    assert [user.get("/api/v1/audit/verify/").status_code for _ in range(2)] == [403, 403]
    denied = AuditEvent.objects.filter(action="access.denied")
    assert list(denied.values_list("actor_id", flat=True)) == [alice.pk, alice.pk]
    finished = timezone.now()

    # Once the minutes are over (the every-minute task), one row per source, status and minute.
    appended = access_denied_windows_close(now=finished + timedelta(minutes=2))
    anonymous = list(denied.filter(actor__isnull=True).values("ip", "data"))
    assert appended == len(anonymous)
    counts, windows = defaultdict(int), defaultdict(list)
    for row in anonymous:
        key = (row["ip"], row["data"]["status"])
        counts[key] += row["data"]["count"]
        windows[key].append(datetime.fromisoformat(row["data"]["window_start"]))
    assert dict(counts) == {("127.0.0.1", 401): HTTP_FLOOD, ("127.0.0.1", 4401): WEBSOCKET_FLOOD,
                            ("203.0.113.9", 401): OTHER_SOURCE_FLOOD}
    minutes = {started.replace(second=0, microsecond=0) + timedelta(minutes=n)
               for n in range(int((finished - started.replace(second=0, microsecond=0)).total_seconds() // 60) + 1)}
    for key, starts in windows.items():
        assert len(starts) == len(set(starts)) and set(starts) <= minutes, key  # one row per minute at most
    assert len(anonymous) <= 3 * len(minutes)

    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().startswith(f"OK: {denied.count()} audit rows verified")
    assert access_denied_windows_close(now=finished + timedelta(minutes=2)) == 0  # each window is written once
