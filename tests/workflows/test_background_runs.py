"""Background runs end to end: a real daphne server takes the request, a real qcluster worker runs it."""
import time

import httpx
import pytest

from conversations.models import Message
from tests.factories import ApiTokenFactory
from tests.fixtures_server import start_worker, stop_process
from tests.invariants import assert_all
from workflows.models import NodeExecution, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def http(alice):
    return {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}


def test_a_background_turn_is_accepted_then_run_by_a_worker(alice, shared_daphne_server, tmp_path, http):
    server = shared_daphne_server()
    worker = start_worker(tmp_path)
    try:
        response = httpx.post(f"{server.base_url}/api/v1/chat/", headers=http, timeout=30,
                              json={"message": "What is 12*7?", "background": True})
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["status"], body["mode"]) == ("pending", "background")
        assert wait_for(lambda: WorkflowExecution.objects.get(pk=body["id"]).status == "completed")
    finally:
        stop_process(worker)
    execution = WorkflowExecution.objects.get(pk=body["id"])
    reply = Message.objects.get(execution=execution, role="assistant")
    assert "84" in reply.content and reply.total_tokens == execution.total_tokens > 0
    detail = httpx.get(f"{server.base_url}/api/v1/executions/{execution.pk}/", headers=http, timeout=30).json()
    assert (detail["status"], detail["total_tokens"]) == ("completed", execution.total_tokens)
    assert_all(execution)


def test_cancelling_a_pending_background_run_means_the_worker_never_runs_it(alice, shared_daphne_server, tmp_path,
                                                                           http):
    from django_q.models import OrmQ, Task

    server = shared_daphne_server()
    response = httpx.post(f"{server.base_url}/api/v1/chat/", headers=http, timeout=30,
                          json={"message": "What is 12*7?", "background": True})
    execution_id = response.json()["id"]
    assert wait_for(lambda: OrmQ.objects.exists(), timeout=10)  # enqueued after commit
    cancel = httpx.post(f"{server.base_url}/api/v1/executions/{execution_id}/cancel/", headers=http, timeout=30)
    assert cancel.json()["status"] == "cancelled"

    worker = start_worker(tmp_path)
    try:
        assert wait_for(lambda: not OrmQ.objects.exists(), timeout=60)  # the worker took the task...
        assert wait_for(lambda: Task.objects.exists(), timeout=60)  # ...and its result is saved: it has ended
    finally:
        stop_process(worker)
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "cancelled"  # ...and found nothing to run
    assert NodeExecution.objects.filter(execution=execution).count() == 0
    assert list(execution.events.values_list("event", flat=True)) == ["message_saved", "workflow_cancelled"]
    assert_all(execution)
