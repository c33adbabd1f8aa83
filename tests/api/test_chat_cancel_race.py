"""Chat turns of one user cancelled from another server process while they are being written, run and ended, on
PostgreSQL (where writers run in parallel): every request is answered without a 5xx and the aggregates stay exact.

Server A takes the turns (blocking, streamed and background, on a few conversations of alice's); server B
cancels every run of alice's it sees pending or running. So run creation (a conversation's row, then alice's),
a cancelled run's ending (its run, its conversation, …) and a pending run ended by its cancel all lock rows of
the same user and conversations at once: they must take them in one order, and a deadlock PostgreSQL still
breaks is tried again, never a 500."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db.models import Count

from conversations.models import Conversation
from tests.factories import ApiTokenFactory
from tests.invariants import assert_i1, assert_i2, assert_i3, assert_seq_gapless
from workflows.models import WorkflowExecution

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TURNS = 60
CONVERSATIONS = 3
MODES = ("sync", "stream", "background")
SERVER_ENV = {"CHATTER_RUN_THROTTLE": "100000/min", "CHATTER_MAX_CONCURRENT_RUNS": "1000",
              "CHATTER_LOCAL_TOKEN_DELAY_MS": "10", "LOG_LEVEL": "WARNING"}


def _turn(client: httpx.Client, i: int, conversation_id: str) -> tuple[int, str, str | None]:
    """One chat turn: its status code, what it said when it was not a success, and its run's id."""
    body = {"message": f"turn {i}: tell me something", "conversation_id": conversation_id}
    mode = MODES[i % len(MODES)]
    if mode == "stream":
        with client.stream("POST", "/api/v1/chat/", json={**body, "stream": True}) as response:
            events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
            ended = bool(events) and events[-1]["event"] in ("workflow_completed", "workflow_cancelled")
            return (response.status_code, "" if ended else f"stream ended with {events[-1:]}",
                    events[0]["execution_id"] if events else None)
    response = client.post("/api/v1/chat/", json={**body, "background": mode == "background"})
    if response.status_code >= 300:
        return response.status_code, response.text[:300], None
    run = response.json()
    return response.status_code, "", run["id"] if mode == "background" else run["execution"]["id"]


def test_turns_cancelled_from_another_server_never_get_a_5xx(alice, daphne_server):
    server_a, server_b = daphne_server(**SERVER_ENV), daphne_server(**SERVER_ENV)
    headers = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}
    turns_client = httpx.Client(base_url=server_a.base_url, headers=headers, timeout=120,
                                limits=httpx.Limits(max_connections=TURNS))
    cancel_client = httpx.Client(base_url=server_b.base_url, headers=headers, timeout=120)
    conversations = []
    for c in range(CONVERSATIONS):
        response = turns_client.post("/api/v1/chat/", json={"message": f"conversation {c}"})
        assert response.status_code == 201, response.text
        conversations.append(response.json()["conversation"]["id"])

    cancel_client.get("/api/v1/executions/")  # server B has loaded what a cancel needs before the burst
    answered: list[tuple[str, int, str]] = []  # (what, status, body when not a success)
    cancelled: set[str] = set()
    cancelled_lock = threading.Lock()
    turns_done = threading.Event()

    def cancel(execution_id: str) -> None:
        with cancelled_lock:
            if execution_id in cancelled:
                return
            cancelled.add(execution_id)
        response = cancel_client.post(f"/api/v1/executions/{execution_id}/cancel/")
        answered.append(("cancel", response.status_code, response.text[:300]))

    def turn(i: int) -> None:
        """One turn on server A; a background one (no worker takes it here) is cancelled on server B at once."""
        status_code, text, execution_id = _turn(turns_client, i, conversations[i % CONVERSATIONS])
        answered.append(("turn", status_code, text))
        if MODES[i % len(MODES)] == "background" and status_code == 202:
            cancel(execution_id)

    def cancel_what_runs() -> None:
        """Server B cancels every run of alice's it sees pending or running, until the turns are answered and no
        run is left pending or running (or a minute more has passed: what is left is reported)."""
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and turns_done.is_set():
                deadline = time.monotonic() + 60
            found = []
            for status in ("pending", "running"):
                response = cancel_client.get("/api/v1/executions/", params={"status": status, "page_size": 100})
                answered.append(("list", response.status_code, response.text[:300]))
                if response.status_code == 200:
                    found += [run["id"] for run in response.json()["results"]]
            for execution_id in found:
                cancel(execution_id)
            if turns_done.is_set() and not found:
                return
            time.sleep(0.01)

    cancellers = [threading.Thread(target=cancel_what_runs) for _ in range(3)]
    for canceller in cancellers:
        canceller.start()
    try:
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(turn, range(TURNS)))
    finally:
        turns_done.set()
        for canceller in cancellers:
            canceller.join()
        turns_client.close()
        cancel_client.close()

    failures = [(what, status_code, text) for what, status_code, text in answered
                if status_code >= 500 or (what == "turn" and status_code not in (200, 201, 202))
                or (what == "cancel" and status_code not in (200, 409))]
    assert failures == [], failures[:5]
    turns = [a for a in answered if a[0] == "turn"]
    assert len(turns) == TURNS
    assert sum(1 for what, status_code, _ in answered if what == "cancel" and status_code == 200) > 0
    ended = dict(WorkflowExecution.objects.values_list("status").annotate(n=Count("id")))
    assert ended.keys() <= {"completed", "cancelled"}, ended
    assert WorkflowExecution.objects.filter(status="cancelled").exists()
    for execution in WorkflowExecution.objects.all():
        assert_i3(execution)
        assert_seq_gapless(execution)
    for conversation in Conversation.objects.all():
        assert_i1(conversation)
    assert_i2()
