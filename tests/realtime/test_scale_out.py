"""Scale-out (docs/operations/scale-out.md): two daphne processes and a qcluster worker on one PostgreSQL + Redis.

Real websocket clients on BOTH servers (`/ws/events/` as alice, `/ws/executions/<id>/` per run) receive every
persisted event of every run, wherever it ran: a sync turn on server A, a streamed turn on server B,
background turns accepted by either and run by the worker, and `manage.py run_workflow` in a process of its
own. Bob's `/ws/events/` client receives none of it, and the aggregates stay exact (I1-I3, I6).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.factories import ApiTokenFactory
from tests.fixtures_server import (
    ROOT,
    Server,
    free_port,
    server_env,
    start_daphne,
    start_worker,
    stop_processes,
)
from tests.invariants import assert_all
from workflows.events import events_publish
from workflows.models import ExecutionEvent, WorkflowExecution

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)"),
]

TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")
PROBE = "scale_out_probe"  # not a run's event: only this test sends it, to know a feed is subscribed
# Slow enough that a client connecting right after a run starts still sees part of it live.
SERVER_ENV = {"CHATTER_LOCAL_TOKEN_DELAY_MS": "5", "CHATTER_RUN_THROTTLE": "10000/min", "LOG_LEVEL": "WARNING"}


# --- processes -----------------------------------------------------------------------------------------------
def _daphne(tmp_path) -> Server:
    port = free_port()
    return Server(start_daphne(tmp_path, port, **SERVER_ENV), port, tmp_path / f"daphne-{port}.log")


def _wait_listening(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"daphne exited: {server.log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"daphne did not start: {server.log.read_text()}")


@pytest.fixture
def cluster(transactional_db, tmp_path):
    """Two daphne servers and one qcluster worker, started together, on this test's database and Redis."""
    processes = []
    try:
        servers = [_daphne(tmp_path) for _ in range(2)]
        processes += [server.process for server in servers]
        processes.append(start_worker(tmp_path, **SERVER_ENV))
        for server in servers:
            _wait_listening(server)
        yield servers
    finally:
        stop_processes(processes)


# --- websocket clients ---------------------------------------------------------------------------------------
class Client:
    """One real websocket client: everything it receives, and how the server closed it."""

    def __init__(self, url: str):
        self.url = url
        self.received: list[dict] = []
        self.close_code: int | None = None
        self.connected = threading.Event()
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            async with connect(self.url, origin="http://127.0.0.1", open_timeout=20, max_queue=None,
                               ping_interval=None) as ws:
                self.connected.set()
                try:
                    async for raw in ws:
                        self.received.append(json.loads(raw))
                except ConnectionClosed:
                    pass
                self.close_code = ws.close_code
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.connected.set()

    def envelopes(self, execution_id) -> list[dict]:
        return [e for e in self.received if e.get("execution_id") == str(execution_id)]

    def persisted(self, execution_id) -> list[tuple[int, str]]:
        return [(e["seq"], e["event"]) for e in self.envelopes(execution_id) if e["seq"] is not None]

    def probed(self) -> bool:
        return any(e.get("event") == PROBE for e in self.received)


class Clients:
    """Websocket clients on one asyncio loop in a thread of their own (the test itself stays sync)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ws-clients", daemon=True)
        self.thread.start()

    def open(self, url: str) -> Client:
        client = Client(url)
        asyncio.run_coroutine_threadsafe(client.run(), self.loop)
        assert client.connected.wait(30), f"could not connect to {url}"
        assert client.error is None, f"{url}: {client.error!r}"
        return client

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def clients():
    opened = Clients()
    yield opened
    opened.close()


def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def in_order_within(pieces: list[str], text: str) -> bool:
    """Whether `pieces` are parts of `text` in order, none used twice (some may be missing)."""
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def probe_until_subscribed(feeds: dict, timeout: float = 20) -> None:
    """A `/ws/events/` feed subscribes to its Redis group just after the handshake; broadcast a probe to each
    user's group until every feed has seen one, so no run can start before its watchers listen."""
    deadline = time.monotonic() + timeout
    n = 0
    while not all(client.probed() for group in feeds.values() for client in group):
        assert time.monotonic() < deadline, "a /ws/events/ feed never subscribed"
        n += 1
        for user_id in feeds:
            events_publish([{"event": PROBE, "execution_id": f"probe-{n}", "seq": None, "ts": "", "data": {}}],
                           owner_id=user_id)
        time.sleep(0.2)


# --- how runs are started ----------------------------------------------------------------------------------
def sse_events(response) -> list[dict]:
    return [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]


def test_every_client_on_every_server_receives_every_event_of_runs_started_anywhere(
        alice, bob, cluster, clients, tmp_path):
    server_a, server_b = cluster
    alice_token = ApiTokenFactory(user=alice).key
    bob_token = ApiTokenFactory(user=bob).key
    headers = {"Authorization": f"Token {alice_token}"}

    def events_url(server, token):
        return f"{server.ws_url}/ws/events/?token={token}"

    def execution_url(server, execution_id, token=alice_token):
        return f"{server.ws_url}/ws/executions/{execution_id}/?token={token}"

    alice_feeds = [clients.open(events_url(server_a, alice_token)), clients.open(events_url(server_b, alice_token))]
    bob_feed = clients.open(events_url(server_b, bob_token))
    probe_until_subscribed({alice.pk: alice_feeds, bob.pk: [bob_feed]})

    run_clients: dict[str, list[Client]] = {}
    run_clients_lock = threading.Lock()

    def watch_run(execution_id) -> None:
        """Both servers' /ws/executions/<id>/, opened while the run may still be going (replay, then live)."""
        watchers = [clients.open(execution_url(server, execution_id)) for server in (server_a, server_b)]
        with run_clients_lock:
            run_clients[str(execution_id)] = watchers

    def sync_turn(server, message):
        response = httpx.post(f"{server.base_url}/api/v1/chat/", headers=headers, timeout=60,
                              json={"message": message})
        assert response.status_code == 201, response.text
        execution_id = response.json()["execution"]["id"]
        watch_run(execution_id)  # finished already: a pure replay
        return execution_id

    def streamed_turn(server, message):
        with httpx.stream("POST", f"{server.base_url}/api/v1/chat/", headers=headers, timeout=60,
                          json={"message": message, "stream": True}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            execution_id = None
            for line in lines:
                if line.startswith("data:"):
                    execution_id = json.loads(line[5:])["execution_id"]
                    break
            watch_run(execution_id)  # while the run goes on in server's thread
            for _ in lines:
                pass
        return execution_id

    def background_turn(server, message):
        response = httpx.post(f"{server.base_url}/api/v1/chat/", headers=headers, timeout=60,
                              json={"message": message, "background": True})
        assert response.status_code == 202, response.text
        execution_id = response.json()["id"]
        watch_run(execution_id)  # pending: the worker runs it after we are listening on both servers
        return execution_id

    def command_run(message):
        known = set(WorkflowExecution.objects.values_list("pk", flat=True))
        command = subprocess.Popen(
            [sys.executable, "manage.py", "run_workflow", "--template", "universal_chat", "--user", "alice",
             "--input", json.dumps({"message": message})],
            cwd=ROOT, env=server_env(tmp_path, **SERVER_ENV), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert wait_for(lambda: WorkflowExecution.objects.exclude(pk__in=known).filter(
                mode="stream", conversation=None).exists(), timeout=60), "run_workflow created no run"
            execution_id = WorkflowExecution.objects.exclude(pk__in=known).get(mode="stream", conversation=None).pk
            watch_run(execution_id)
            output, _ = command.communicate(timeout=60)
        finally:
            if command.poll() is None:
                command.kill()
        assert command.returncode == 0, output
        return str(execution_id)

    def in_thread(function, *args):
        try:
            return function(*args)
        finally:
            connection.close()  # this thread's own database connection

    starts = [
        (sync_turn, server_a, "What is 12*7?"),
        (streamed_turn, server_b, "hello from a stream"),
        (background_turn, server_a, "What is 6*7?"),
        (background_turn, server_b, "What time is it?"),
        (command_run, "What is 2+3?"),
        (sync_turn, server_b, "hello again"),
        (streamed_turn, server_a, "What is 9*9?"),
    ]
    with ThreadPoolExecutor(len(starts)) as pool:
        execution_ids = [f.result() for f in [pool.submit(in_thread, *start) for start in starts]]
    assert len(set(execution_ids)) == len(starts)
    assert wait_for(lambda: WorkflowExecution.objects.filter(
        pk__in=execution_ids, status__in=WorkflowExecution.TERMINAL).count() == len(starts), timeout=60)
    runs = {str(e.pk): e for e in WorkflowExecution.objects.filter(pk__in=execution_ids)}
    persisted = {pk: list(ExecutionEvent.objects.filter(execution_id=pk).order_by("seq").values_list("seq", "event"))
                 for pk in runs}

    def delivered_everything() -> bool:
        return all(client.persisted(pk) == events for client in alice_feeds for pk, events in persisted.items()) \
            and all(c.close_code is not None for watchers in run_clients.values() for c in watchers)

    wait_for(delivered_everything, timeout=60)  # returns as soon as it holds; generous for a loaded CI machine

    for pk, execution in runs.items():
        assert execution.status == "completed", (pk, execution.error_message)
        assert_all(execution)  # I1 (its conversation), I2, I3, I6
        events = persisted[pk]
        assert events[0][1] == "workflow_started" and events[-1][1] == "workflow_completed"
        for feed in alice_feeds:
            # Every persisted event, in order, exactly once, through Redis from whichever process ran it.
            assert feed.persisted(pk) == events, (feed.url, execution.mode)
            # Token deltas are only ever live and, across processes, at most once (a publisher's send that timed out
            # under load drops them): the ones a feed got are pieces of the reply, in order, none twice.
            tokens = [e["data"]["text"] for e in feed.envelopes(pk) if e["event"] == "token"]
            assert in_order_within(tokens, execution.output_data["content"]), (feed.url, tokens)
        for watcher in run_clients[pk]:
            assert watcher.persisted(pk) == events, (watcher.url, execution.mode, watcher.close_code)
            assert watcher.close_code == 1000  # closed after the terminal event
            assert {e["execution_id"] for e in watcher.received} == {pk}
        if execution.conversation_id:
            conversation = execution.conversation
            conversation.refresh_from_db()
            for feed in alice_feeds:
                updates = [e["data"] for e in feed.received if e["event"] == "conversation_updated"
                           and e["data"]["conversation_id"] == str(conversation.pk)]
                assert updates and updates[-1]["message_count"] == conversation.message_count == 2
                assert updates[-1]["total_tokens"] == conversation.total_tokens

    kinds = {(e.mode, e.conversation_id is None) for e in runs.values()}
    assert kinds == {("sync", False), ("stream", False), ("background", False), ("stream", True)}
    for feed in alice_feeds:
        unexpected = {e["execution_id"] for e in feed.received if e["event"] != PROBE} - set(runs)
        assert not unexpected, unexpected

    assert all(e["event"] == PROBE for e in bob_feed.received), "bob received alice's events"
    refused = clients.open(execution_url(server_a, execution_ids[0], token=bob_token))
    assert wait_for(lambda: refused.close_code is not None, timeout=10)
    assert refused.close_code == 4404 and refused.received == []
