"""A socket's access ends with its key or its user: revoking the key (DELETE /api/v1/keys/<id>/) closes the sockets
opened with it (4401) while they stream, and deactivating a user closes all of theirs; the user's other sockets go
on. Through Channels' WebsocketCommunicator on the in-process application (and, on PostgreSQL + Redis, with a real
websocket client against two server processes: the key is revoked on one, the socket lives on the other)."""
from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from chatter_project.asgi import application
from tests.factories import ApiTokenFactory
from tests.fixtures_server import start_worker, stop_process
from tests.realtime.test_scale_out import clients, wait_for  # noqa: F401 - real websocket clients (a fixture)
from tests.realtime.test_websockets import close_db_connections, run_in_thread  # noqa: F401 - a fixture too
from workflows.models import WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_cancel, execution_create

pytestmark = pytest.mark.django_db(transaction=True)
CLOSE_UNAUTHENTICATED = 4401
TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")
# The local model's reply repeats the message: at 100 ms a word it streams for seconds after the first tokens.
LONG = "please say every one of these words back to me slowly so that the stream goes on for a while " * 2


@sync_to_async
def key_for(user):
    token = ApiTokenFactory(user=user, name="socket")
    return token, token.key


@sync_to_async
def streamed_run(user, message: str = LONG) -> WorkflowExecution:
    return execution_create(ChatRequest(owner=user, message=message, mode="stream"))


@sync_to_async
def cancel(execution_id) -> None:
    execution_cancel(execution=WorkflowExecution.objects.get(pk=execution_id))


async def open_socket(path: str, headers=()) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def tokens(communicator, count: int) -> list[dict]:
    received = []
    while sum(e["event"] == "token" for e in received) < count:
        received.append(await communicator.receive_json_from(timeout=10))
    return received


async def closed_within(communicator, seconds: float) -> tuple[list[dict], int | None]:
    """What the socket received until the server closed it, and the close code (None: still open, and then
    the communicator has stopped the application)."""
    received, deadline = [], time.monotonic() + seconds
    try:
        while True:
            output = await communicator.receive_output(timeout=max(deadline - time.monotonic(), 0.01))
            if output["type"] == "websocket.close":
                return received, output.get("code")
            received.append(json.loads(output["text"]))
    except asyncio.TimeoutError:
        return received, None


@pytest.mark.parametrize("path", ["/ws/events/", "/ws/executions/{run}/"])
async def test_a_revoked_keys_socket_is_closed_while_it_streams(alice, async_client, settings, path):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 100
    (revoked, revoked_key), (kept, kept_key) = await key_for(alice), await key_for(alice)
    execution = await streamed_run(alice)
    doomed = await open_socket(f"{path.format(run=execution.pk)}?token={revoked_key}")
    other = await open_socket(f"{path.format(run=execution.pk)}?token={kept_key}")
    thread = run_in_thread(execution.pk)
    try:
        await tokens(doomed, 3)
        await async_client.aforce_login(alice)

        assert (await async_client.delete(f"/api/v1/keys/{revoked.uid}/")).status_code == 204

        received, code = await closed_within(doomed, 2)
        assert code == CLOSE_UNAUTHENTICATED
        assert not any(e["event"] in TERMINAL for e in received)  # closed while the run went on
        # The user's other key's socket goes on streaming the run (one that stopped would time out here).
        streamed = await tokens(other, 3)
        assert {e["execution_id"] for e in streamed} == {str(execution.pk)}
        assert not any(e["event"] in TERMINAL for e in streamed)
    finally:
        await cancel(execution.pk)
        await asyncio.to_thread(thread.join)
    await other.disconnect()


@pytest.mark.parametrize("path", ["/ws/events/", "/ws/executions/{run}/"])
async def test_item_15_an_expiring_keys_socket_is_closed_when_the_key_expires(alice, settings, path):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 100
    expiring = await sync_to_async(ApiTokenFactory)(user=alice, name="expiring",
                                                    expires_at=timezone.now() + timedelta(seconds=5))
    kept_key = (await key_for(alice))[1]
    execution = await streamed_run(alice, LONG * 2)  # streams for longer than the key lives
    doomed = await open_socket(f"{path.format(run=execution.pk)}?token={expiring.key}")
    other = await open_socket(f"{path.format(run=execution.pk)}?token={kept_key}")
    thread = run_in_thread(execution.pk)
    try:
        await tokens(doomed, 1)  # it streams until then

        received, code = await closed_within(doomed, 10)

        assert code == CLOSE_UNAUTHENTICATED
        assert timezone.now() >= expiring.expires_at
        assert not any(e["event"] in TERMINAL for e in received)  # closed while the run went on
        streamed = await tokens(other, 3)  # the user's other key's socket goes on
        assert not any(e["event"] in TERMINAL for e in streamed)
    finally:
        await cancel(execution.pk)
        await asyncio.to_thread(thread.join)
    await other.disconnect()


async def test_a_deactivated_users_sockets_are_closed_and_other_users_are_not(alice, bob, client, settings):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 100
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    session = await open_socket("/ws/events/", headers=[(b"origin", b"http://127.0.0.1"), cookie])
    by_key = await open_socket(f"/ws/events/?token={(await key_for(alice))[1]}")
    bobs = await open_socket(f"/ws/events/?token={(await key_for(bob))[1]}")
    execution = await streamed_run(alice)
    thread = run_in_thread(execution.pk)
    try:
        await tokens(session, 2)

        alice.is_active = False
        await sync_to_async(alice.save)()

        assert (await closed_within(session, 2))[1] == CLOSE_UNAUTHENTICATED
        assert (await closed_within(by_key, 2))[1] == CLOSE_UNAUTHENTICATED
        assert await bobs.receive_nothing(timeout=0.5)  # bob's is still open: no close came
    finally:
        await cancel(execution.pk)
        await asyncio.to_thread(thread.join)
    await bobs.disconnect()


# --- two server processes on PostgreSQL + Redis ------------------------------------------------------------
def tokens_of(client) -> int:
    return sum(e["event"] == "token" for e in client.received)


@pytest.fixture
def two_servers_and_a_worker(daphne_server, tmp_path):
    env = {"CHATTER_LOCAL_TOKEN_DELAY_MS": "100", "LOG_LEVEL": "WARNING"}
    servers = daphne_server(**env), daphne_server(**env)
    worker = start_worker(tmp_path, **env)
    yield servers
    stop_process(worker)


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_a_key_revoked_on_one_server_closes_its_socket_on_the_other(alice, two_servers_and_a_worker, clients):
    server_a, server_b = two_servers_and_a_worker
    owner_key = ApiTokenFactory(user=alice).key
    revoked = ApiTokenFactory(user=alice, name="socket")
    revoked_key = revoked.key
    kept_key = ApiTokenFactory(user=alice, name="kept").key
    doomed = clients.open(f"{server_b.ws_url}/ws/events/?token={revoked_key}")
    other = clients.open(f"{server_b.ws_url}/ws/events/?token={kept_key}")
    auth = {"Authorization": f"Token {owner_key}"}
    # A background turn, run by the worker: its tokens reach server B through Redis, as the revocation must.
    started = httpx.post(f"{server_a.base_url}/api/v1/chat/", headers=auth, timeout=20,
                         json={"message": LONG, "background": True})
    assert started.status_code == 202, started.text
    try:
        assert wait_for(lambda: tokens_of(doomed) >= 3, 30), doomed.received

        response = httpx.delete(f"{server_a.base_url}/api/v1/keys/{revoked.uid}/", headers=auth, timeout=20)

        assert response.status_code == 204
        assert wait_for(lambda: doomed.close_code is not None, 2), f"still open after {tokens_of(doomed)} tokens"
        assert doomed.close_code == CLOSE_UNAUTHENTICATED
        assert not any(e["event"] in TERMINAL for e in doomed.received)  # closed while the run went on
        streamed = tokens_of(other)
        assert wait_for(lambda: tokens_of(other) > streamed, 5)  # and so does the user's other socket
    finally:
        httpx.post(f"{server_a.base_url}/api/v1/executions/{started.json()['id']}/cancel/", headers=auth, timeout=20)


# --- a Redis outage: the message that ends a socket's access is lost, the socket still closes ------------------
@pytest.fixture
def two_servers_on_a_private_redis(daphne_server, private_redis):
    return private_redis, daphne_server(REDIS_URL=private_redis.url), daphne_server(REDIS_URL=private_redis.url)


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_a_key_revoked_while_redis_is_down_closes_its_socket_in_the_other_process(
        alice, two_servers_on_a_private_redis, clients):
    redis, server_a, server_b = two_servers_on_a_private_redis
    auth = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}
    revoked = ApiTokenFactory(user=alice, name="socket")
    doomed = clients.open(f"{server_a.ws_url}/ws/events/?token={revoked.key}")
    other = clients.open(f"{server_a.ws_url}/ws/events/?token={ApiTokenFactory(user=alice, name='kept').key}")
    redis.kill()

    # Revoked on the other process while its message cannot be sent: it is lost, as the first one sent on a
    # process's dead connection once Redis is back was.
    assert httpx.delete(f"{server_b.base_url}/api/v1/keys/{revoked.uid}/", headers=auth, timeout=20).status_code == 204
    redis.start()

    assert wait_for(lambda: doomed.close_code is not None, 15), "the revoked key's socket is still open"
    assert doomed.close_code == CLOSE_UNAUTHENTICATED
    assert other.close_code is None  # the user's other key's socket goes on
    assert httpx.get(f"{server_a.base_url}/api/v1/executions/", timeout=20,
                     headers={"Authorization": f"Token {revoked.key}"}).status_code == 401


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_a_key_revoked_while_redis_hangs_is_refused_by_every_process_once_it_answers_with_its_data_kept(
        alice, two_servers_on_a_private_redis):
    redis, server_a, server_b = two_servers_on_a_private_redis
    auth = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}
    revoked = ApiTokenFactory(user=alice, name="revoked")
    used = {"Authorization": f"Token {revoked.key}"}
    assert httpx.get(f"{server_b.base_url}/api/v1/executions/", headers=used, timeout=20).status_code == 200
    redis.pause()  # B, idle meanwhile, keeps the key as it read it; Redis keeps the version B read it under

    try:
        gone = httpx.delete(f"{server_a.base_url}/api/v1/keys/{revoked.uid}/", headers=auth, timeout=30)
    finally:
        redis.resume()

    assert gone.status_code == 204
    assert wait_for(lambda: httpx.get(f"{server_b.base_url}/api/v1/executions/", headers=used,
                                      timeout=20).status_code == 401, 15), "the other process still takes the key"


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_a_user_deactivated_while_redis_is_down_loses_their_sockets_and_others_keep_theirs(
        alice, bob, two_servers_on_a_private_redis, clients):
    redis, server_a, _ = two_servers_on_a_private_redis
    alices = clients.open(f"{server_a.ws_url}/ws/events/?token={ApiTokenFactory(user=alice).key}")
    bobs = clients.open(f"{server_a.ws_url}/ws/events/?token={ApiTokenFactory(user=bob).key}")
    redis.kill()

    alice.is_active = False
    alice.save()  # (the message this sends reaches no server: they are on a Redis of their own, down)
    redis.start()

    assert wait_for(lambda: alices.close_code is not None, 15), "the deactivated user's socket is still open"
    assert alices.close_code == CLOSE_UNAUTHENTICATED
    assert bobs.close_code is None


async def test_logging_out_closes_that_sessions_sockets_and_not_the_users_others(alice, client, settings):
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    session = await open_socket("/ws/events/", headers=[(b"origin", b"http://127.0.0.1"), cookie])
    by_key = await open_socket(f"/ws/events/?token={(await key_for(alice))[1]}")

    assert (await sync_to_async(client.post)("/live/logout/")).status_code == 302

    assert (await closed_within(session, 5))[1] == CLOSE_UNAUTHENTICATED
    assert await by_key.receive_nothing(timeout=0.5)  # the user's key socket is still open: no close came
    await by_key.disconnect()
