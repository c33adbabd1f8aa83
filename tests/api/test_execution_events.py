"""GET /api/v1/executions/<id>/events/: the persisted event log as JSON, or as SSE (replay, live, resume)."""
import asyncio
import threading

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings

from tests.api.conftest import assert_error
from tests.api.sse import Frame, SSEParser, parse_sse
from tests.factories import ApiTokenFactory
from workflows.events import TERMINAL_EVENTS, event_envelope
from workflows.models import ExecutionEvent, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import (
    execution_create,
    execution_run,
)

SSE = {"HTTP_ACCEPT": "text/event-stream"}


def events_url(execution) -> str:
    return f"/api/v1/executions/{execution.pk}/events/"


def finished_chat_turn(owner, message: str = "What is 12*7?") -> WorkflowExecution:
    execution = execution_create(ChatRequest(owner=owner, message=message))
    return execution_run(execution_id=execution.pk)


def test_the_test_parser_follows_the_sse_spec():
    text = ': comment\r\nid: 1\nevent: a\ndata: {"x":\ndata:1}\n\ndata: plain\r\rid: 2\nevent: lost\n\nid: 3\ndata: x'
    frames = parse_sse(text)
    assert frames == [Frame("1", "a", '{"x":\n1}'), Frame(None, "message", "plain")]
    assert frames[0].envelope == {"x": 1}


# --- JSON -----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_it_lists_the_persisted_envelopes_in_order_and_paginated(api, alice):
    execution = finished_chat_turn(alice)
    rows = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq"))
    page = api.get(f"{events_url(execution)}?page_size=15").json()

    assert page["count"] == len(rows) and page["previous"] is None and page["next"]
    expected = [event_envelope(execution_id=r.execution_id, event=r.event, data=r.data, seq=r.seq, ts=r.created_at)
                for r in rows]
    assert len(rows) > 15
    rest = api.get(page["next"]).json()["results"]
    assert page["results"] + rest == expected
    assert set(expected[0]) == {"event", "execution_id", "seq", "ts", "data"}
    assert [e["seq"] for e in expected] == list(range(1, len(rows) + 1))
    assert expected[-1]["event"] == "workflow_completed"


@pytest.mark.django_db
def test_after_starts_the_list_after_a_seq(api, alice):
    execution = finished_chat_turn(alice)
    page = api.get(f"{events_url(execution)}?after=3&page_size=100").json()
    assert [e["seq"] for e in page["results"]] == list(range(4, execution.events.count() + 1))


@pytest.mark.django_db
@pytest.mark.parametrize("query, headers, field", [
    ("?after=-1", {}, "after"),
    ("?after=three", {}, "after"),
    ("", {"HTTP_LAST_EVENT_ID": "x", **SSE}, "last_event_id"),
])
def test_a_bad_starting_point_is_a_400(api, alice, query, headers, field):
    execution = execution_create(ChatRequest(owner=alice, message="hi"))
    details = assert_error(api.get(f"{events_url(execution)}{query}", **headers), 400, "validation_error")
    assert {d["path"] for d in details} == {field}


# --- SSE in process -------------------------------------------------------------------------------------
async def sse_frames(response) -> list[Frame]:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache" and response["X-Accel-Buffering"] == "no"
    return parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())


@pytest.mark.django_db(transaction=True)
async def test_sse_replays_a_finished_run_and_ends_after_the_terminal_event(async_client, alice):
    execution = await sync_to_async(finished_chat_turn)(alice)
    await async_client.aforce_login(alice)

    frames = await sse_frames(await async_client.get(events_url(execution), headers={"Accept": "text/event-stream"}))

    count = await execution.events.acount()
    assert [f.id for f in frames] == [str(seq) for seq in range(1, count + 1)]
    assert all(f.event == f.envelope["event"] and f.envelope["seq"] == int(f.id) for f in frames)
    assert frames[-1].event == "workflow_completed"
    assert frames[-1].envelope["data"]["total_tokens"] == execution.total_tokens


@pytest.mark.django_db(transaction=True)
async def test_last_event_id_resumes_right_after_it(async_client, alice):
    execution = await sync_to_async(finished_chat_turn)(alice)
    await async_client.aforce_login(alice)
    everything = await sse_frames(await async_client.get(events_url(execution),
                                                         headers={"Accept": "text/event-stream"}))

    resumed = await sse_frames(await async_client.get(
        f"{events_url(execution)}?after=1", headers={"Accept": "text/event-stream", "Last-Event-ID": "5"}))

    assert resumed == everything[5:]  # Last-Event-ID wins over ?after
    after = await sse_frames(await async_client.get(f"{events_url(execution)}?after=9",
                                                    headers={"Accept": "text/event-stream"}))
    assert after == everything[9:]


@pytest.mark.django_db(transaction=True)
async def test_resuming_after_the_terminal_event_is_a_204_so_event_source_stops(async_client, alice):
    execution = await sync_to_async(finished_chat_turn)(alice)
    await async_client.aforce_login(alice)
    last = await execution.events.acount()

    response = await async_client.get(events_url(execution),
                                      headers={"Accept": "text/event-stream", "Last-Event-ID": str(last)})

    assert response.status_code == 204


@pytest.mark.django_db(transaction=True)
async def test_sse_follows_a_live_run_with_tokens_and_no_gaps(async_client, alice):
    execution = await sync_to_async(execution_create)(ChatRequest(owner=alice, message="say something long"))
    await async_client.aforce_login(alice)
    done = threading.Event()

    with override_settings(CHATTER_LOCAL_TOKEN_DELAY_MS=20):
        response = await async_client.get(events_url(execution), headers={"Accept": "text/event-stream"})
        # The run starts once the stream below is subscribed and waiting.
        asyncio.get_running_loop().call_later(0.3, lambda: threading.Thread(target=lambda: (
            execution_run(execution_id=execution.pk), connection.close(), done.set())).start())
        frames = await sse_frames(response)

    await sync_to_async(done.wait)(10)
    await execution.arefresh_from_db()
    persisted = [f for f in frames if f.id is not None]
    assert [int(f.id) for f in persisted] == list(range(1, await execution.events.acount() + 1))
    assert persisted[-1].event in TERMINAL_EVENTS and frames[-1] == persisted[-1]
    tokens = [f for f in frames if f.event == "token"]
    assert tokens and all(f.envelope["seq"] is None for f in tokens)
    assert "".join(f.envelope["data"]["text"] for f in tokens) in execution.output_data["content"]


# --- SSE over a real server -----------------------------------------------------------------------------
def read_frames(response, *, until=None) -> list[Frame]:
    """Frames as they arrive, until the server ends the stream (or `until(frames)` says stop)."""
    parser, frames = SSEParser(), []
    for line in response.iter_lines():
        frame = parser.feed_line(line)
        if frame is not None:
            frames.append(frame)
            if until is not None and until(frames):
                break
    return frames


@pytest.mark.django_db(transaction=True)
def test_a_real_server_resumes_a_finished_run_from_last_event_id(shared_daphne_server, alice):
    server = shared_daphne_server()
    execution = finished_chat_turn(alice)
    count = execution.events.count()
    headers = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}", "Accept": "text/event-stream"}

    client = httpx.Client(base_url=server.base_url, headers=headers, timeout=30)
    with client, client.stream("GET", events_url(execution), headers={"Last-Event-ID": "3"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        frames = read_frames(response)  # returns only because the server closed the stream

    assert [int(f.id) for f in frames] == list(range(4, count + 1))
    assert frames[-1].event == "workflow_completed"


@pytest.mark.django_db(transaction=True)
def test_a_real_server_resumes_a_live_run_without_gaps_or_duplicates(shared_daphne_server, alice):
    server = shared_daphne_server(CHATTER_LOCAL_TOKEN_DELAY_MS="50")  # as test_chat's client that disconnects
    headers = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}
    message = "tell me everything about the weather in a rather long answer " * 2

    def two_tokens(frames: list[Frame]) -> bool:
        return sum(f.event == "token" for f in frames) == 2

    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        with client.stream("POST", "/api/v1/chat/", json={"message": message, "stream": True}) as response:
            seen = [f for f in read_frames(response, until=two_tokens) if f.id is not None]
        execution_id, last = seen[0].envelope["execution_id"], seen[-1].id
        with client.stream("GET", f"/api/v1/executions/{execution_id}/events/",
                           headers={"Accept": "text/event-stream", "Last-Event-ID": last}) as response:
            resumed = read_frames(response)

    execution = WorkflowExecution.objects.get(pk=execution_id)
    persisted = [f for f in resumed if f.id is not None]
    assert persisted[0].id == str(int(last) + 1)
    assert [int(f.id) for f in seen + persisted] == list(range(1, execution.events.count() + 1))
    assert persisted[-1].event == "workflow_completed" and execution.status == "completed"
    resumed_text = "".join(f.envelope["data"]["text"] for f in resumed if f.event == "token")
    assert resumed_text and execution.output_data["content"].endswith(resumed_text)
