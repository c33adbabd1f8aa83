"""Websocket consumers through Channels' WebsocketCommunicator against the real ASGI application."""
import asyncio
import threading
import time
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import OperationalError, connections

from chatter_project.asgi import application
from tests.factories import ApiTokenFactory
from workflows.models import ExecutionEvent, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = (b"origin", b"http://127.0.0.1")
TERMINAL = ("workflow_completed", "workflow_failed", "workflow_cancelled")


@pytest.fixture(autouse=True)
async def close_db_connections():
    yield
    await sync_to_async(connections.close_all)()


@sync_to_async
def token_for(user) -> str:
    return ApiTokenFactory(user=user).key


@sync_to_async
def create(user, message="What is 12*7?", **kwargs) -> WorkflowExecution:
    return execution_create(ChatRequest(owner=user, message=message, mode="stream", **kwargs))


def run_in_thread(execution_id) -> threading.Thread:
    def work():
        try:
            execution_run(execution_id=execution_id)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@sync_to_async
def persisted(execution_id) -> list[tuple[int, str]]:
    return list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq").values_list("seq", "event"))


async def connect(path, *, headers=(ORIGIN,)):
    communicator = WebsocketCommunicator(application, path, headers=list(headers))
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def receive_until_closed(communicator, timeout=10) -> tuple[list[dict], int]:
    """All JSON messages until the server closes; returns them and the close code."""
    received = []
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return received, output.get("code")
        import json

        received.append(json.loads(output["text"]))


async def test_it_refuses_a_connection_without_credentials(alice):
    execution = await create(alice)
    communicator = await connect(f"/ws/executions/{execution.pk}/")
    assert await receive_until_closed(communicator) == ([], 4401)
    communicator = await connect(f"/ws/executions/{execution.pk}/?token=not-a-token")
    assert await receive_until_closed(communicator) == ([], 4401)


async def test_it_refuses_a_connection_without_an_allowed_origin(alice):
    execution = await create(alice)
    communicator = WebsocketCommunicator(application, f"/ws/executions/{execution.pk}/?token={await token_for(alice)}",
                                         headers=[(b"origin", b"http://evil.example")])
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


@pytest.mark.parametrize("target", ["bobs-run", "missing", "not-a-uuid"])
async def test_another_users_or_a_missing_run_is_4404(alice, bob, target):
    execution = await create(alice)
    execution_id = {"bobs-run": execution.pk, "missing": "00000000-0000-0000-0000-000000000000",
                    "not-a-uuid": "nope"}[target]
    communicator = await connect(f"/ws/executions/{execution_id}/?token={await token_for(bob)}")
    assert await receive_until_closed(communicator) == ([], 4404)


async def test_a_finished_tools_run_replays_every_event_in_order_then_closes(alice):
    execution = await create(alice)
    await asyncio.to_thread(run_in_thread(execution.pk).join)
    communicator = await connect(f"/ws/executions/{execution.pk}/?token={await token_for(alice)}")
    received, code = await receive_until_closed(communicator)

    assert code == 1000
    expected = await persisted(execution.pk)
    assert [(e["seq"], e["event"]) for e in received] == expected
    assert [e["seq"] for e in received] == list(range(1, len(expected) + 1))
    names = [e["event"] for e in received]
    assert names[0] == "workflow_started" and names[-1] == "workflow_completed"
    assert {"node_started", "node_completed", "token_usage", "tool_called", "message_saved"} <= set(names)
    assert all(e["execution_id"] == str(execution.pk) and e["ts"].endswith("Z") for e in received)


async def test_after_replays_only_the_later_events(alice):
    execution = await create(alice)
    await asyncio.to_thread(run_in_thread(execution.pk).join)
    communicator = await connect(f"/ws/executions/{execution.pk}/?after=5&token={await token_for(alice)}")
    received, _ = await receive_until_closed(communicator)
    assert [e["seq"] for e in received] == [seq for seq, _ in await persisted(execution.pk)][5:]


async def test_a_live_run_streams_tokens_and_events_in_order(alice, settings):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 5
    execution = await create(alice)
    communicator = await connect(f"/ws/executions/{execution.pk}/?token={await token_for(alice)}")
    thread = run_in_thread(execution.pk)
    received, code = await receive_until_closed(communicator)
    await asyncio.to_thread(thread.join)

    persisted_events = [e for e in received if e["seq"] is not None]
    assert [(e["seq"], e["event"]) for e in persisted_events] == await persisted(execution.pk)
    tokens = "".join(e["data"]["text"] for e in received if e["event"] == "token")
    assert "84" in tokens
    assert received[-1]["event"] == "workflow_completed" and code == 1000


async def test_a_client_that_reconnects_mid_run_misses_nothing_and_gets_no_duplicates(alice, settings):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 20
    execution = await create(alice, message="Please tell me what 6*7 is, and 5+5 too, thanks")
    token = await token_for(alice)
    communicator = await connect(f"/ws/executions/{execution.pk}/?token={token}")
    thread = run_in_thread(execution.pk)
    first = []
    while len([e for e in first if e["seq"] is not None]) < 6:
        first.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()
    last_seq = max(e["seq"] for e in first if e["seq"] is not None)

    communicator = await connect(f"/ws/executions/{execution.pk}/?after={last_seq}&token={token}")
    second, code = await receive_until_closed(communicator)
    await asyncio.to_thread(thread.join)

    seqs = [e["seq"] for e in first + second if e["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [(e["seq"], e["event"]) for e in first + second if e["seq"] is not None] == await persisted(execution.pk)
    assert second[-1]["event"] in TERMINAL and code == 1000


async def test_session_cookie_authenticates_too(alice, client):
    await sync_to_async(client.force_login)(alice)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    execution = await create(alice)
    await asyncio.to_thread(run_in_thread(execution.pk).join)
    communicator = await connect(f"/ws/executions/{execution.pk}/", headers=[ORIGIN, (b"cookie", cookie)])
    received, code = await receive_until_closed(communicator)
    assert received[-1]["event"] == "workflow_completed" and code == 1000


async def test_the_user_stream_has_the_users_runs_and_conversation_updates_only(alice, bob):
    communicator = await connect(f"/ws/events/?token={await token_for(alice)}")
    mine, theirs = await create(alice), await create(bob)
    await asyncio.to_thread(run_in_thread(theirs.pk).join)
    await asyncio.to_thread(run_in_thread(mine.pk).join)
    received = []
    while not received or received[-1]["event"] != "conversation_updated":
        received.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()

    assert {e["execution_id"] for e in received} == {str(mine.pk)}
    assert [e["seq"] for e in received if e["seq"] is not None] == [s for s, _ in await persisted(mine.pk)]
    update = received[-1]["data"]
    assert update["conversation_id"] == str(mine.conversation_id) and update["message_count"] == 2


async def test_the_user_stream_refuses_anonymous_clients():
    communicator = await connect("/ws/events/")
    assert await receive_until_closed(communicator) == ([], 4401)


async def test_garbage_frames_are_ignored(alice):
    execution = await create(alice)
    communicator = await connect(f"/ws/executions/{execution.pk}/?token={await token_for(alice)}")
    await communicator.send_to(text_data="\x00{not json")
    await communicator.send_to(bytes_data=b"\xff\xfe")
    await asyncio.to_thread(run_in_thread(execution.pk).join)
    received, code = await receive_until_closed(communicator)
    assert received[-1]["event"] == "workflow_completed" and code == 1000


async def test_asking_for_events_after_the_terminal_one_closes_at_once(alice):
    execution = await create(alice)
    await asyncio.to_thread(run_in_thread(execution.pk).join)
    last = (await persisted(execution.pk))[-1][0]
    communicator = await connect(f"/ws/executions/{execution.pk}/?after={last}&token={await token_for(alice)}")
    assert await receive_until_closed(communicator) == ([], 1000)


async def test_asking_for_events_past_where_a_running_run_ends_closes_when_it_ends(alice, settings):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 5
    execution = await create(alice)
    communicator = await connect(f"/ws/executions/{execution.pk}/?after=1000&token={await token_for(alice)}")
    thread = run_in_thread(execution.pk)

    received, code = await receive_until_closed(communicator)  # (a socket left open times out here)

    await asyncio.to_thread(thread.join)
    assert [e for e in received if e["seq"] is not None] == [] and code == 1000
    assert (await persisted(execution.pk))[-1][0] < 1000


async def test_a_token_client_without_cookies_needs_no_origin(alice):
    execution = await create(alice)
    await asyncio.to_thread(run_in_thread(execution.pk).join)
    communicator = await connect(f"/ws/executions/{execution.pk}/?token={await token_for(alice)}", headers=[])
    received, code = await receive_until_closed(communicator)
    assert received[-1]["event"] == "workflow_completed" and code == 1000


async def test_a_cookie_session_from_no_or_another_origin_is_refused(alice, client):
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    for headers in ([cookie], [cookie, (b"origin", b"https://evil.example")]):
        communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert not connected, headers


@pytest.mark.parametrize("path", ["/ws/executions/{id}/", "/ws/events/"])
async def test_a_socket_listens_from_its_handshake_on_so_a_token_right_after_it_is_not_missed(alice, path):
    """A client connects, then starts a run: the first token published once the handshake is complete reaches
    it (the feed subscribes before the handshake completes, not in a task that runs later)."""
    import json

    from workflows.events import event_envelope
    from workflows.hub import hub

    execution = await create(alice)
    communicator = await connect(f"{path.format(id=execution.pk)}?token={await token_for(alice)}")
    hub.publish([event_envelope(execution_id=execution.pk, event="token", data={"text": "first"}, seq=None)],
                owner_id=alice.pk)
    output = await communicator.receive_output(timeout=5)
    assert json.loads(output["text"])["data"] == {"text": "first"}
    await communicator.disconnect()



@pytest.mark.parametrize("after", ["%C2%B2", "9" * 40, "%00", "-1", "1e3"])
async def test_it_refuses_an_after_that_is_not_a_sequence_number_with_4400(alice, after):
    execution = await create(alice)
    communicator = await connect(f"/ws/executions/{execution.pk}/?after={after}&token={await token_for(alice)}")

    assert await receive_until_closed(communicator) == ([], 4400)


async def test_it_refuses_a_nul_in_the_path_as_not_found(alice):
    communicator = await connect(f"/ws/executions/%00/?token={await token_for(alice)}")

    assert await receive_until_closed(communicator) == ([], 4404)


@pytest.mark.parametrize("path", ["/ws/nope/", "/ws/events", "/ws/executions/00000000-0000-0000-0000-000000000000",
                                  "/"])
async def test_a_path_no_socket_serves_is_closed_as_not_found(alice, path, caplog):
    communicator = await connect(path)  # was a crash of the router: HTTP 500 and a traceback

    assert await receive_until_closed(communicator) == ([], 4404)
    communicator = await connect(f"{path}?token={await token_for(alice)}")
    assert await receive_until_closed(communicator) == ([], 4404)
    assert [record for record in caplog.records if record.levelname == "ERROR"] == []


@pytest.mark.parametrize("path", ["/ws/executions/{execution}/", "/ws/events/"])
async def test_a_socket_whose_access_check_alone_cannot_read_the_database_sends_the_error_and_closes_4503(
        alice, settings, path, caplog):
    """The access check's own give-up (close_when_access_ends), apart from the feed's: the socket's feed reads the
    database throughout, only its key's and user's re-reads fail, and for CHATTER_FEED_DB_WAIT_S the socket stays
    open (the access kept meanwhile) before it says so in /api/v1/'s error shape and closes 4503."""
    settings.CHATTER_FEED_DB_WAIT_S = 0.6
    execution = await create(alice)  # pending, never run: the run's feed waits, reading its row at each look
    communicator = await connect(path.format(execution=execution.pk) + f"?token={await token_for(alice)}")
    failed_at = []

    def unreachable(**kwargs):
        failed_at.append(time.monotonic())
        raise OperationalError("connection refused")

    with mock.patch("workflows.realtime.ACCESS_CHECK_S", 0.1), \
            mock.patch("workflows.realtime.access_live", side_effect=unreachable):
        received, code = await receive_until_closed(communicator, timeout=10)

    assert code == 4503
    assert [message["error"]["code"] for message in received] == ["unavailable"]
    assert received[0]["error"]["message"].startswith("the socket's access cannot be checked")
    assert len(failed_at) >= 3 and failed_at[-1] - failed_at[0] >= 0.6  # tried again until the wait was out
    assert "cannot read the database; it tries again" in caplog.text
