"""A server process works on at most CHATTER_DB_POOL_SIZE database connections, from Django's own pool: a burst of
turns is served in turn on them. A background run the queue refuses ends failed at once (never left pending) and
is a 503 naming it."""
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from django.test import override_settings

from conversations.models import Message
from tests.api.conftest import assert_error
from tests.api.sse import parse_sse
from tests.factories import ApiTokenFactory
from tests.fixtures_server import database_url
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, WorkflowExecution

URL = "/api/v1/chat/"


@pytest.mark.django_db(transaction=True)
@override_settings(CHATTER_RUN_THREADS=1)
async def test_a_streamed_turn_runs_on_the_runner_and_its_feed_ends_with_the_terminal_event(async_client, alice):
    await async_client.aforce_login(alice)
    response = await async_client.post(URL, {"message": "What is 12*7?", "stream": True},
                                       content_type="application/json")
    assert response.status_code == 200
    frames = parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())
    assert [f.event for f in frames if f.id is not None][-1] == "workflow_completed"
    assert [int(f.id) for f in frames if f.id is not None] == list(range(1, len([f for f in frames if f.id]) + 1))
    assert (await WorkflowExecution.objects.aget(owner=alice)).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_background_run_the_queue_refuses_ends_failed_and_is_a_503(api, monkeypatch):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("workflows.services.queue.async_task", broker_down)
    response = api.post(URL, {"message": "hello", "background": True}, format="json")

    details = assert_error(response, 503, "queue_unavailable")
    execution = WorkflowExecution.objects.get()
    assert details == [{"path": "execution_id", "code": "queue_unavailable", "message": str(execution.pk)}]
    assert (execution.status, execution.error_type) == ("failed", "queue_unavailable")
    assert "broker unreachable" in execution.error_message
    assert ExecutionEvent.objects.filter(execution=execution).order_by("-seq").first().event == "workflow_failed"
    assert Message.objects.filter(execution=execution, role="user").exists()  # the turn is on record
    assert_all(execution)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_burst_over_capacity_is_served_in_turn_on_a_bounded_number_of_connections(daphne_server, alice):
    """30 turns at once (sync and streamed) on a server whose pool holds 3 connections: every one completes, and
    the server never holds more connections than its pool (every thread of it borrows from the pool)."""
    slots, turns = 3, 30
    server = daphne_server(CHATTER_DB_POOL_SIZE=str(slots), CHATTER_MAX_CONCURRENT_RUNS="1000",
                           DATABASE_URL=f"{database_url()}?application_name=burst-server",
                           CHATTER_RUN_THROTTLE="100000/min", LOG_LEVEL="WARNING")
    key = ApiTokenFactory(user=alice).key
    peak, done = 0, threading.Event()

    def watch_connections():
        nonlocal peak
        try:
            with connection.cursor() as cursor:
                while not done.is_set():
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'burst-server' "
                                   "AND datname = current_database()")
                    peak = max(peak, cursor.fetchone()[0])
                    done.wait(0.005)
        finally:
            connection.close()

    def turn(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {key}"}, timeout=120) as client:
            response = client.post(URL, json={"message": f"What is {i}*7?", "stream": i % 2 == 1})
            return response.status_code, response.text

    watcher = threading.Thread(target=watch_connections)
    watcher.start()
    try:
        with ThreadPoolExecutor(turns) as pool:
            results = list(pool.map(turn, range(turns)))
    finally:
        done.set()
        watcher.join()

    assert sorted(status for status, _ in results) == [200] * (turns // 2) + [201] * (turns // 2), results
    executions = list(WorkflowExecution.objects.all())
    assert len(executions) == turns and all(execution.status == "completed" for execution in executions)
    for execution in executions:
        assert_all(execution)
    assert 1 <= peak <= slots, f"the server held {peak} connections at once with a pool of {slots}"
    assert "Traceback" not in server.log.read_text()
