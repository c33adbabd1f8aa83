"""Events raised in one process reach websocket clients of another, through Redis (docs/operations/scale-out.md)."""
import json
import os
import sys
import threading

import pytest
from websockets.sync.client import connect

from tests import launcher
from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, server_env
from workflows.models import ExecutionEvent, WorkflowExecution

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)"),
]


def test_a_run_in_a_command_process_reaches_a_websocket_client_of_a_daphne_process(alice, shared_daphne_server,
                                                                                   tmp_path):
    server = shared_daphne_server()
    token = ApiTokenFactory(user=alice).key
    received: list[dict] = []
    subscribed = threading.Event()

    def listen():
        with connect(f"{server.ws_url}/ws/events/?token={token}", origin="http://127.0.0.1",
                     open_timeout=10) as socket:
            subscribed.set()
            while True:
                envelope = json.loads(socket.recv(timeout=30))
                received.append(envelope)
                if envelope["event"] == "workflow_completed":
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert subscribed.wait(15)
    command = launcher.run(
        [sys.executable, "manage.py", "run_workflow", "--template", "universal_chat", "--user", "alice",
         "--input", '{"message": "What is 12*7?"}'],
        cwd=ROOT, env=server_env(tmp_path, CHATTER_LOCAL_TOKEN_DELAY_MS="5"), timeout=120,
    )
    assert command.returncode == 0, command.stderr
    listener.join(60)
    assert not listener.is_alive()

    execution = WorkflowExecution.objects.get()
    persisted = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", "event"))
    assert [(e["seq"], e["event"]) for e in received if e["seq"] is not None] == persisted
    tokens = "".join(e["data"]["text"] for e in received if e["event"] == "token")
    assert "84" in tokens  # tokens are never persisted: only the Redis layer could have carried them
    assert {e["execution_id"] for e in received} == {str(execution.pk)}
