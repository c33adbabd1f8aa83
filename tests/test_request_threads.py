"""The ASGI handler's request threads (chatter_project/handlers.py): a request runs in a thread of its own, one that
an earlier, finished request used when there is one, so the thread's database connection serves it too; a thread
left idle closes its connections and ends."""
import asyncio
import json
import threading
import time

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.core.signals import request_started
from django.db import connections
from django.db.backends.signals import connection_created
from rest_framework.authtoken.models import Token

from chatter_project import handlers
from chatter_project.handlers import ThreadReusingASGIHandler
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def handler(monkeypatch):
    """A handler whose idle threads retire soon, so none outlives the test (the test database is dropped at the
    end, and PostgreSQL refuses while a connection is open)."""
    monkeypatch.setattr(handlers, "IDLE_S", 0.3)
    handler = ThreadReusingASGIHandler()
    yield handler
    while handler._idle:
        handler._retire(handler._idle.pop()[1])
    await asyncio.sleep(0.5)


@pytest.fixture
def threads():
    """The thread each request ran in, in order (request_started is sent in the request's thread)."""
    seen: list[threading.Thread] = []

    def record(**kwargs):
        seen.append(threading.current_thread())

    request_started.connect(record)
    yield seen
    request_started.disconnect(record)


@pytest.fixture
def opened():
    """The threads that opened a database connection."""
    seen: list[str] = []

    def record(connection, **kwargs):
        seen.append(threading.current_thread().name)

    connection_created.connect(record)
    yield seen
    connection_created.disconnect(record)


@sync_to_async
def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


async def call(handler, path, *, token, method="GET", body=b"", hold=None) -> tuple[int, bytes]:
    """One HTTP request through the handler; with `hold`, its body arrives once that is set."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Token {token}".encode()),
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }
    received = False
    sent = []

    async def receive():
        nonlocal received
        if not received:
            received = True
            if hold is not None:
                await hold.wait()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays

    async def send(message):
        sent.append(message)

    await handler(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_sequential_requests_run_in_one_thread(handler, threads, alice):
    token = await token_for(alice)
    for _ in range(3):
        assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
        await asyncio.sleep(0.05)  # the thread goes back to the idle list once its request is done
    assert len(threads) == 3 and len(set(threads)) == 1


@pytest.mark.postgres
async def test_sequential_requests_share_one_database_connection(handler, opened, alice):
    token = await token_for(alice)
    for _ in range(3):
        assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
        await asyncio.sleep(0.05)
    assert len([name for name in opened if name.startswith("request")]) == 1


async def test_concurrent_requests_get_threads_of_their_own(handler, threads, alice):
    token = await token_for(alice)
    hold = asyncio.Event()
    first = asyncio.create_task(call(handler, "/api/v1/conversations/", token=token, hold=hold))
    await asyncio.sleep(0.05)  # the first request has its thread and waits for its body
    assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
    hold.set()
    assert (await first)[0] == 200
    assert len(set(threads)) == 2


async def test_threads_beyond_the_idle_limit_end_when_their_request_is_done(handler, threads, alice, monkeypatch):
    monkeypatch.setattr(handlers, "MAX_IDLE", 1)
    monkeypatch.setattr(handlers, "IDLE_S", 60)
    token = await token_for(alice)
    hold = asyncio.Event()
    first = asyncio.create_task(call(handler, "/api/v1/conversations/", token=token, hold=hold))
    await asyncio.sleep(0.05)
    assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
    hold.set()
    assert (await first)[0] == 200
    await asyncio.sleep(0.3)
    assert sorted(thread.is_alive() for thread in threads) == [False, True]


async def test_an_idle_thread_closes_its_connections_and_ends(handler, threads, opened, alice):
    token = await token_for(alice)
    assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
    (thread,) = threads
    await asyncio.sleep(1)
    assert not thread.is_alive()
    assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
    assert threads[1] is not thread
    assert len([name for name in opened if name.startswith("request")]) == 2


async def test_a_request_cancelled_while_its_view_runs_does_not_hold_up_the_next(handler, threads, alice, settings):
    """The server gives up on a request (daphne cancels it once its client has been gone for a while): its run goes
    on in its thread and is recorded in full, and the next request gets another thread instead of waiting."""
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 300  # the reply's ~11 tokens take over 3 s
    token = await token_for(alice)
    turn = asyncio.create_task(call(handler, "/api/v1/chat/", token=token, method="POST",
                                    body=json.dumps({"message": "hello there"}).encode()))
    await asyncio.sleep(0.3)
    while not turn.done():  # asgiref waits for the thread on a first cancel
        turn.cancel()
        await asyncio.sleep(0.01)

    @sync_to_async
    def statuses():
        return list(WorkflowExecution.objects.values_list("status", flat=True))

    assert await statuses() == ["running"]
    assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
    assert await statuses() == ["running"]  # answered while the first view still runs: it did not wait behind it
    assert threads[1] is not threads[0]
    deadline = time.monotonic() + 10
    while (found := await statuses()) != ["completed"]:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)


async def test_a_request_runs_its_middleware_and_view_in_one_hand_off(handler, alice, monkeypatch):
    """Every hop between the event loop and the request's thread costs ~0.1 ms and a GIL hand-off; Django's async
    middleware chain made ~16 per request, ours makes one for the middleware and the view together."""
    token = await token_for(alice)
    hops = []
    hop = SyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__name__", repr(self.func)))
        return await hop(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    assert (await call(handler, "/api/v1/conversations/", token=token))[0] == 200
    monkeypatch.undo()
    assert hops.count("get_response") == 1
    assert len(hops) <= 3, hops  # besides it: the request_started receivers, and closing the response


async def test_a_streamed_run_runs_in_its_requests_thread_on_its_connection(handler, threads, opened, alice):
    """The run of a streamed turn goes to the request's own thread once the view has returned, so it neither
    makes a thread nor opens a connection of its own (with persistent connections the second turn opens none)."""
    token = await token_for(alice)
    body = json.dumps({"message": "What is 12*7?", "stream": True}).encode()
    for _ in range(2):
        status, stream = await call(handler, "/api/v1/chat/", token=token, method="POST", body=body)
        assert status == 200 and b"event: workflow_completed" in stream
        for _ in range(500):  # the thread is handed back to the idle list from its own queue, just after
            if handler._idle:
                break
            await asyncio.sleep(0.01)
    assert len(set(threads)) == 1
    request_opens = [name for name in opened if name.startswith("request")]
    assert set(request_opens) == {threads[0].name}
    if connections["default"].settings_dict["CONN_MAX_AGE"]:  # PostgreSQL: kept for the next request
        assert len(request_opens) == 1  # one connection for both turns and their runs
    assert not [name for name in opened if name.startswith("run-")], opened  # no thread made for a run

    @sync_to_async
    def statuses():
        return list(WorkflowExecution.objects.values_list("status", flat=True))

    assert await statuses() == ["completed", "completed"]
    await sync_to_async(connections.close_all)()  # this test's own, from the sync_to_async thread
