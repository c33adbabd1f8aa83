"""Redis stopped in the middle of a run ("a slow or gone reader never slows or breaks a run": docs/api/rest.md#events):
the run still completes and persists everything, the stream that started it still ends with its terminal
event, a websocket client connected before the outage still gets every persisted event (from the database),
and one reconnecting with ?after= during the outage gets the rest of the log.

A private redis-server on a free port (tests.fixtures_server.private_redis) backs one daphne process, so stopping
it touches nothing else.
"""
import json
import os
import threading

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from tests.api.sse import SSEParser
from tests.factories import ApiTokenFactory
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, WorkflowExecution
from workflows.services.run_requests import ChatRequest

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)"),
]


class WebsocketFeed(threading.Thread):
    """Collects the envelopes of /ws/executions/<id>/ until the server closes the socket."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.envelopes, self.closed_code, self.refused = url, [], None, None
        self.receiving = threading.Event()

    def run(self) -> None:
        try:
            with connect(self.url, origin="http://127.0.0.1", open_timeout=10) as websocket:
                try:
                    while True:
                        self.envelopes.append(json.loads(websocket.recv(timeout=30)))
                        self.receiving.set()
                except ConnectionClosed as closed:
                    self.closed_code = closed.rcvd.code if closed.rcvd else None
        except InvalidHandshake as refused:
            self.refused = refused

    def persisted(self) -> list[tuple[int, str]]:
        return [(e["seq"], e["event"]) for e in self.envelopes if e["seq"] is not None]


def test_a_run_survives_redis_stopping_and_watchers_catch_up_from_the_database(
        alice, daphne_server, private_redis):
    redis = private_redis
    server = daphne_server(REDIS_URL=redis.url, CHATTER_LOCAL_TOKEN_DELAY_MS="150")
    token = ApiTokenFactory(user=alice).key
    streamed: list[dict] = []
    started, first_token = threading.Event(), threading.Event()

    def stream_a_turn() -> None:
        parser = SSEParser()
        with httpx.stream("POST", f"{server.base_url}/api/v1/chat/", headers={"Authorization": f"Token {token}"},
                          json={"message": "hello there, tell me a long story", "stream": True,
                                "enable_tools": False}, timeout=60) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                frame = parser.feed_line(line)
                if frame is None:
                    continue
                streamed.append(frame.envelope)
                started.set()
                if frame.event == "token":
                    first_token.set()

    turn = threading.Thread(target=stream_a_turn, daemon=True)
    turn.start()
    assert started.wait(30)
    execution_id = streamed[0]["execution_id"]
    watcher = WebsocketFeed(f"{server.ws_url}/ws/executions/{execution_id}/?token={token}")
    watcher.start()
    assert watcher.receiving.wait(15) and first_token.wait(15)

    redis.kill()  # mid-run: the model is still streaming its answer

    turn.join(60)
    assert not turn.is_alive()
    execution = WorkflowExecution.objects.get(pk=execution_id)
    assert execution.status == "completed"
    assert_all(execution)
    persisted = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", "event"))
    # The stream that started the run is fed in-process: all of it, tokens included, terminal event last.
    assert [(e["seq"], e["event"]) for e in streamed if e["seq"] is not None] == persisted
    assert "".join(e["data"]["text"] for e in streamed if e["event"] == "token") == execution.output_data["content"]

    # The watcher connected before the outage: the rest came from the database, then the socket closed.
    watcher.join(30)
    assert not watcher.is_alive()
    assert watcher.persisted() == persisted and watcher.closed_code == 1000

    # Redis is back: a client reconnecting resumes after the last event it saw.
    redis.start()
    resumed = WebsocketFeed(f"{server.ws_url}/ws/executions/{execution_id}/?token={token}&after=3")
    resumed.start()
    resumed.join(30)
    assert not resumed.is_alive()
    assert resumed.persisted() == [event for event in persisted if event[0] > 3]
    assert resumed.closed_code == 1000


def test_a_client_connecting_while_redis_is_down_gets_the_persisted_log(alice, daphne_server, private_redis):
    from workflows.services.runs import execution_create, execution_run

    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hello")).pk)
    server = daphne_server(REDIS_URL=private_redis.url)
    token = ApiTokenFactory(user=alice).key
    private_redis.kill()

    feed = WebsocketFeed(f"{server.ws_url}/ws/executions/{execution.pk}/?token={token}&after=2")
    feed.start()
    feed.join(30)
    assert feed.refused is None, feed.refused
    persisted = list(execution.events.order_by("seq").values_list("seq", "event"))
    assert feed.persisted() == [event for event in persisted if event[0] > 2] and feed.closed_code == 1000
