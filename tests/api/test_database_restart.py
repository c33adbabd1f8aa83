"""A PostgreSQL restart costs at most the requests in flight: every request sent once the database is back is
answered 2xx, although each server process's pool still held connections the restart closed (Django's pool,
psycopg_pool, which hands out what it holds without asking the server).

On a PostgreSQL of the test's own (the suite's is not restarted under it), one daphne process: a burst fills its
pool, then a light load (one request at a time: chat turns and reads) goes on while PostgreSQL restarts.

A run streaming its reply while the database is down, for longer than a pooled connection is waited for, goes on:
its cancel check cannot read its row meanwhile, which is no cancel, and its call is booked once the database is
back. Its stream goes on too, and its user's /ws/events/: its feed relays the live tokens and reads the database
again once it is back, or ends with an `error` frame once its reads have failed for CHATTER_FEED_DB_WAIT_S (a
websocket: the error, then closed 4503). A socket's check of its access (every 2 s) that cannot read the database is
made again at the next, the socket relaying meanwhile and closed once its key is revoked after. A run whose model
answers while the database is down ends once it is back, with the provider's own usage (its ending waits for the
database), unless its server is stopped meanwhile: that one exits without waiting, its run left to the sweep."""
from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.cache import HotReads
from tests.api.sse import SSEParser
from workflows.realtime import ACCESS_CHECK_S

pytestmark = pytest.mark.postgres

SERVER_ENV = {"CHATTER_RUN_THROTTLE": "100000/min", "CHATTER_MAX_CONCURRENT_RUNS": "100", "LOG_LEVEL": "WARNING"}
AFTER_RESTART = 20  # requests sent once the database is back
WAIT_AT_MOST_S = 120  # a liveness bound, not a timing


def test_a_restart_costs_no_request_sent_after_the_database_is_back(private_postgres, daphne_server):
    # The admin and its key in one process (a process start costs about two seconds of CPU)
    token = private_postgres.manage("shell", "-c", "from django.core.management import call_command; "
                                    "call_command('ensure_admin'); call_command('create_api_token', 'admin')"
                                    ).strip().split()[-1]
    server = daphne_server(**private_postgres.env(**SERVER_ENV))
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {token}"}, timeout=60,
                          limits=httpx.Limits(max_connections=20))
    with ThreadPoolExecutor(16) as pool:  # the pool grows to hold many connections, idle afterwards
        burst = list(pool.map(lambda i: client.post("/api/v1/chat/", json={"message": f"burst {i}"}).status_code,
                              range(32)))
    assert burst == [201] * 32

    sent: list[tuple[float, int | str]] = []  # (when it was sent, its status or the error)
    stop = threading.Event()

    def light_load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            at = time.monotonic()
            try:
                response = (client.post("/api/v1/chat/", json={"message": f"turn {i}"}) if i % 2 else
                            client.get("/api/v1/conversations/"))
                sent.append((at, response.status_code))
            except httpx.HTTPError as exc:
                sent.append((at, f"{type(exc).__name__}: {exc}"))
            time.sleep(0.05)

    load = threading.Thread(target=light_load)
    load.start()
    try:
        time.sleep(1)
        private_postgres.restart()
        back = time.monotonic()
        while sum(at > back for at, _ in sent) < AFTER_RESTART and time.monotonic() - back < WAIT_AT_MOST_S:
            time.sleep(0.1)
    finally:
        stop.set()
        load.join(120)
        client.close()

    after = [outcome for at, outcome in sent if at > back]
    assert len(after) >= AFTER_RESTART, sent[-5:]
    assert [outcome for outcome in after if outcome not in (200, 201)] == [], after


def test_a_run_streaming_while_the_database_is_down_goes_on_and_books_its_call(private_postgres, daphne_server):
    token = private_postgres.manage("shell", "-c", "from django.core.management import call_command; "
                                    "call_command('ensure_admin'); call_command('create_api_token', 'admin')"
                                    ).strip().split()[-1]
    pool_timeout_s = 2  # how long a thread waits for a pooled connection: the database stays down longer
    server = daphne_server(**private_postgres.env(**SERVER_ENV, CHATTER_DB_POOL_TIMEOUT_S=str(pool_timeout_s),
                                                  CHATTER_LOCAL_TOKEN_DELAY_MS="250"))
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {token}"},
                          timeout=WAIT_AT_MOST_S)
    message = "please repeat all of these words back to me slowly and one by one " * 3  # a reply of about 50 words

    parser, tokens = SSEParser(), []
    with client:
        with client.stream("POST", "/api/v1/chat/", json={"message": message, "stream": True,
                                                                "enable_tools": False}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                frame = parser.feed_line(line)
                if frame is not None and frame.event == "workflow_started":
                    execution_id = frame.envelope["execution_id"]
                if frame is not None and frame.event == "token":
                    tokens.append(frame.envelope["data"]["text"])
                if len(tokens) == 2:
                    break  # the model streams its reply; the client leaves (its feed reads the database too)
        with private_postgres.down():  # longer than the run's cancel check waits for a connection, several times
            time.sleep(3 * pool_timeout_s)
        deadline = time.monotonic() + WAIT_AT_MOST_S
        while (run := client.get(f"/api/v1/executions/{execution_id}/").raise_for_status().json())["status"] in (
                "pending", "running") and time.monotonic() < deadline:
            time.sleep(0.2)

    assert run["status"] == "completed", (run["error_type"], run["error_message"])
    assert run["output_data"]["content"].startswith("".join(tokens))
    (call,) = run["llm_call_log"]  # the model's own count, not an estimate
    assert run["llm_calls"] == 1 and not call["estimated"] and call["completion_tokens"] > 0
    assert [run[field] for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost")] == \
        [call[field] for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost")]


def _admin_client(private_postgres, daphne_server, **env) -> httpx.Client:
    return _admin_server(private_postgres, daphne_server, **env)[1]


def _admin_server(private_postgres, daphne_server, **env) -> tuple:
    """A server of `env`, and a client of its admin's."""
    token = private_postgres.manage("shell", "-c", "from django.core.management import call_command; "
                                    "call_command('ensure_admin'); call_command('create_api_token', 'admin')"
                                    ).strip().split()[-1]
    server = daphne_server(**private_postgres.env(**SERVER_ENV, **env))
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {token}"},
                          timeout=WAIT_AT_MOST_S / 2)  # a stream silent this long fails the test
    # One request first, so the server's first connection to the database is not made within a websocket's
    # handshake, which daphne gives 5 s (a loaded machine's first one took longer)
    httpx.get(f"{server.base_url}/api/v1/conversations/", headers=client.headers,
              timeout=WAIT_AT_MOST_S / 2).raise_for_status()
    return server, client


def _streamed_turn(client: httpx.Client, *, when_first_token, message: str) -> list:
    """A streamed chat turn's frames, read to the stream's end; `when_first_token()` is called at its first token."""
    parser, frames = SSEParser(), []
    with client.stream("POST", "/api/v1/chat/", json={"message": message, "stream": True, "enable_tools": False}
                       ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if (frame := parser.feed_line(line)) is not None:
                frames.append(frame)
                if frame.event == "token" and sum(f.event == "token" for f in frames) == 1:
                    when_first_token()
    return frames


def test_a_stream_whose_feed_cannot_read_the_database_goes_on_once_it_is_back(private_postgres, daphne_server):
    pool_timeout_s = 1
    # A word every 1.5 s: the feed is quiet between them, so it reads the database, during the outage too, which
    # ends before the reply does (the run's ending is then written at once).
    client = _admin_client(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S=str(pool_timeout_s),
                           CHATTER_LOCAL_TOKEN_DELAY_MS="1500")

    def down_a_while() -> None:
        with private_postgres.down():
            time.sleep(4 * pool_timeout_s)

    outage = threading.Thread(target=down_a_while)
    with client:
        frames = _streamed_turn(client, when_first_token=outage.start,
                                message="say these ten words back to me now please thank you")
        outage.join()
        run = client.get(f"/api/v1/executions/{frames[0].envelope['execution_id']}/").raise_for_status().json()

    assert frames[-1].event == "workflow_completed", [frame.event for frame in frames[-3:]]
    assert "".join(frame.envelope["data"]["text"] for frame in frames if frame.event == "token") == \
        run["output_data"]["content"]
    seqs = [frame.envelope["seq"] for frame in frames if frame.event != "token"]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_stream_whose_feed_cannot_read_the_database_for_too_long_ends_with_an_error(private_postgres,
                                                                                        daphne_server):
    # A word every 0.4 s: the reply goes on well past the outage's start, however slowly the machine stops PostgreSQL
    client = _admin_client(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S="1",
                           CHATTER_FEED_DB_WAIT_S="2", CHATTER_LOCAL_TOKEN_DELAY_MS="400")
    ended = threading.Event()

    def down_until_ended() -> None:
        with private_postgres.down():  # until the stream has ended (or the test's bound)
            ended.wait(WAIT_AT_MOST_S)

    outage = threading.Thread(target=down_until_ended)
    with client:
        try:
            frames = _streamed_turn(client, when_first_token=outage.start,
                                    message="please repeat these words back to me slowly")
        finally:
            ended.set()
            outage.join()

    assert frames[-1].event == "error", [frame.event for frame in frames[-3:]]
    assert frames[-1].envelope["error"]["code"] == "unavailable"
    assert "database" in frames[-1].envelope["error"]["message"]


def _run_streamed_until(client: httpx.Client, message: str, event: str) -> str:
    """A streamed chat turn's run id, its stream left at its first `event` frame (the run goes on)."""
    with client.stream("POST", "/api/v1/chat/", json={"message": message, "stream": True, "enable_tools": False}
                       ) as response:
        parser = SSEParser()
        for line in response.iter_lines():
            frame = parser.feed_line(line)
            if frame is not None and frame.event == event:
                return frame.envelope["execution_id"]
    raise AssertionError(f"the stream ended before its first {event}")


def test_a_run_whose_model_answers_while_the_database_is_down_books_its_own_usage_once_it_is_back(
        private_postgres, daphne_server):
    pool_timeout_s = 1
    # A reply of about ten words, 0.2 s each: the model answers while the database is down, and the run's ending
    # (and the end from its rows it fell back on) finds no connection, several pool timeouts over
    client = _admin_client(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S=str(pool_timeout_s),
                           CHATTER_LOCAL_TOKEN_DELAY_MS="200")
    with client:
        # the model streams its reply; the client leaves
        execution_id = _run_streamed_until(client, "say these ten words back to me now please", "token")
        with private_postgres.down():
            time.sleep(8 * pool_timeout_s)
        deadline = time.monotonic() + WAIT_AT_MOST_S
        while time.monotonic() < deadline:  # (a 503 while the server's pool connects again)
            response = client.get(f"/api/v1/executions/{execution_id}/")
            if response.status_code != 503 and (run := response.raise_for_status().json())["status"] not in (
                    "pending", "running"):
                break
            time.sleep(0.2)

    assert run["status"] == "completed", (run["status"], run["error_type"], run["error_message"])
    (call,) = run["llm_call_log"]  # the provider's own count, not the sweep's estimate
    assert not call["estimated"] and call["completion_tokens"] > 0
    assert [run[field] for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost")] == \
        [call[field] for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost")]
    private_postgres.manage("reconcile_aggregates")  # exits 1 on any drift


def test_a_websocket_whose_feed_cannot_read_the_database_for_too_long_sends_the_error_and_closes(
        private_postgres, daphne_server):
    # A word every 0.4 s: the reply goes on well past the outage's start, however slowly the machine stops PostgreSQL
    client = _admin_client(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S="1",
                           CHATTER_FEED_DB_WAIT_S="2", CHATTER_LOCAL_TOKEN_DELAY_MS="400")
    token = client.headers["Authorization"].split()[-1]
    ended = threading.Event()

    def down_until_ended() -> None:
        with private_postgres.down():  # until the socket has closed (or the test's bound)
            ended.wait(WAIT_AT_MOST_S)

    outage = threading.Thread(target=down_until_ended)
    received = []
    with client:
        # the client follows the run on a websocket instead
        execution_id = _run_streamed_until(client, "please repeat these words back to me slowly", "workflow_started")
        url = f"{str(client.base_url).replace('http', 'ws', 1)}/ws/executions/{execution_id}/?token={token}&after=0"
        with connect(url, open_timeout=10) as websocket:
            try:
                while True:
                    received.append(json.loads(websocket.recv(timeout=WAIT_AT_MOST_S / 2)))
                    if received[-1].get("event") == "token" and not outage.is_alive():
                        outage.start()
            except ConnectionClosed as exc:
                closed = exc.rcvd
            finally:
                ended.set()
                if outage.is_alive():
                    outage.join()

    assert received[-1]["error"]["code"] == "unavailable", received[-3:]
    assert "database" in received[-1]["error"]["message"]
    assert closed is not None and closed.code == 4503


def test_the_user_websocket_whose_feed_cannot_read_the_database_goes_on_once_it_is_back(private_postgres,
                                                                                       daphne_server):
    pool_timeout_s = 1
    # A word every 0.6 s: the database is down for a few of them, its reply ends after the outage
    client = _admin_client(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S=str(pool_timeout_s),
                           CHATTER_LOCAL_TOKEN_DELAY_MS="600")
    token = client.headers["Authorization"].split()[-1]

    def down_a_while() -> None:
        with private_postgres.down():  # longer than the user feed's look at the user's runs (every 2 s), twice
            time.sleep(5 * pool_timeout_s)

    outage = threading.Thread(target=down_a_while)
    received = []
    with client, connect(f"{str(client.base_url).replace('http', 'ws', 1)}/ws/events/?token={token}",
                         open_timeout=10) as websocket:
        # the client follows the run on its user's websocket instead
        execution_id = _run_streamed_until(client, "say these ten words back to me now please", "token")
        outage.start()
        try:
            while not received or received[-1].get("event") != "workflow_completed":
                received.append(json.loads(websocket.recv(timeout=WAIT_AT_MOST_S / 2)))
        finally:
            outage.join()

    seqs = [envelope["seq"] for envelope in received if envelope.get("execution_id") == execution_id
            and envelope["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


def test_a_socket_whose_access_check_cannot_read_the_database_goes_on_and_closes_once_its_key_is_revoked(
        private_postgres, daphne_server):
    # A word every 0.6 s: the reply goes on through the outage and ends after it
    client = _admin_client(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S="1",
                           CHATTER_LOCAL_TOKEN_DELAY_MS="600")
    received = []
    with client:
        key = client.post("/api/v1/keys/", json={"name": "socket", "scopes": ["read"]}).raise_for_status().json()
        with connect(f"{str(client.base_url).replace('http', 'ws', 1)}/ws/events/?token={key['key']}",
                     open_timeout=10) as websocket:
            execution_id = _run_streamed_until(client, "say these ten words back to me now please", "token")
            with private_postgres.down():
                # A change announced by another process (HotReads.announce): the server's memo of hot reads is
                # stale, so the socket's next checks of its access read the database, which is down
                redis.Redis.from_url(private_postgres.redis_url).set(HotReads.VERSION_KEY, uuid.uuid4().hex)
                time.sleep(3 * ACCESS_CHECK_S)
            while not received or received[-1].get("event") != "workflow_completed":
                received.append(json.loads(websocket.recv(timeout=WAIT_AT_MOST_S / 2)))
            deadline = time.monotonic() + WAIT_AT_MOST_S
            while (revoked := client.delete(f"/api/v1/keys/{key['id']}/")).status_code == 503 and \
                    time.monotonic() < deadline:  # (a 503 while the server's pool connects again)
                time.sleep(0.2)
            assert revoked.status_code == 204, revoked.text
            try:
                while True:
                    websocket.recv(timeout=WAIT_AT_MOST_S / 2)
            except ConnectionClosed as exc:
                closed = exc.rcvd

    seqs = [envelope["seq"] for envelope in received if envelope.get("execution_id") == execution_id
            and envelope["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert closed is not None and closed.code == 4401


def test_a_server_stopped_while_the_database_is_down_exits_and_leaves_its_run_to_the_sweep(private_postgres,
                                                                                           daphne_server):
    run_timeout_s = 3600  # what the run's ending would wait for the database, at most, in a server not stopping
    # A reply of about ten words, 0.2 s each: the model answers while the database is down
    server, client = _admin_server(private_postgres, daphne_server, CHATTER_DB_POOL_TIMEOUT_S="1",
                                   CHATTER_LOCAL_TOKEN_DELAY_MS="200", CHATTER_EXECUTION_TIMEOUT_S=str(run_timeout_s))
    with client:
        execution_id = _run_streamed_until(client, "say these ten words back to me now please", "token")
    with private_postgres.down():
        server.process.terminate()
        server.process.wait(WAIT_AT_MOST_S)  # (raises if it is still running then)

    # The run was left `running`, its heartbeat silent: the sweep ends it as a crashed process's, once a sweep that
    # found it silent is followed by one that finds it still so (with no attempt left to queue it again)
    deadline = time.monotonic() + 3 * WAIT_AT_MOST_S
    while execution_id not in (swept := private_postgres.manage("sweep_executions", CHATTER_RESUME_ATTEMPTS="0")) \
            and time.monotonic() < deadline:
        time.sleep(10)
    assert f"interrupted {execution_id}" in swept, swept
    server, client = _admin_server(private_postgres, daphne_server)
    with client:
        run = client.get(f"/api/v1/executions/{execution_id}/").raise_for_status().json()
    assert (run["status"], run["error_type"]) == ("failed", "interrupted"), run["error_message"]
    assert run["llm_calls"] == len(run["llm_call_log"]) == 1  # its call booked once, by the sweep
    private_postgres.manage("reconcile_aggregates")  # exits 1 on any drift (I1-I3)
