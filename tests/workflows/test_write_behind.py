"""The write a run makes as a model call starts is made on a writer thread while the call goes out
(workflows.writer): the call does not wait for it, yet nothing the run publishes next (its tokens) reaches a watcher
before that write's events, and a write that fails there ends the run like any write that fails."""
import threading
import time
from contextlib import contextmanager

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection

from engine.local_model import LocalChatModel
from tests.api.sse import parse_sse
from tests.invariants import assert_all, assert_streamed_as_stored
from workflows.cancels import CANCEL_POLL_S
from workflows.models import NodeExecution, WorkflowExecution
from workflows.recorder import ExecutionRecorder
from workflows.writer import HELD_AT_MOST_S, WRITER_THREADS, WriteBehind

URL = "/api/v1/chat/"
TRANSACTIONAL = pytest.mark.django_db(transaction=True)


async def frames_of(async_client, message: str) -> list:
    response = await async_client.post(URL, {"message": message, "stream": True}, content_type="application/json")
    assert response.status_code == 200
    return parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())


@pytest.fixture
def write_started() -> threading.Event:
    """Set as a run's first write starts (first_write_watched)."""
    return threading.Event()


@pytest.fixture
def model_asked(monkeypatch, write_started) -> threading.Event:
    """Set as the local model is asked for its stream (the call has gone out); its answer waits for the first write
    to start, as a provider's does (an answer that comes at once leaves that write to the run's next)."""
    asked = threading.Event()
    stream = LocalChatModel._stream

    def watched(model, *args, **kwargs):
        asked.set()
        write_started.wait(timeout=5)
        yield from stream(model, *args, **kwargs)

    monkeypatch.setattr(LocalChatModel, "_stream", watched)
    return asked


def first_write_watched(monkeypatch, what, started: threading.Event) -> None:
    """`what(recorder)` runs as each run's first write (the one before its model call) starts, `started` set."""
    write_held, seen = ExecutionRecorder.write_held, set()

    def watched(recorder, **kwargs):
        if recorder.execution.pk not in seen:
            seen.add(recorder.execution.pk)
            started.set()
            what(recorder)
        write_held(recorder, **kwargs)

    monkeypatch.setattr(ExecutionRecorder, "write_held", watched)


@TRANSACTIONAL
async def test_the_model_call_goes_out_while_the_write_before_it_is_made(async_client, alice, monkeypatch,
                                                                         model_asked, write_started):
    waited = []  # the first write waits for the model to be asked: made before the call, it would wait in vain
    first_write_watched(monkeypatch, lambda recorder: waited.append(model_asked.wait(timeout=5)), write_started)
    await async_client.aforce_login(alice)

    frames = await frames_of(async_client, "hello there")

    assert waited == [True]
    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert execution.status == "completed"
    events = [f.event if f.event != "node_started" else f"node_started:{f.envelope['data']['node_id']}"
              for f in frames]
    first_token = events.index("token")  # published after the write's events, though made while it waited
    assert events[:first_token] == ["workflow_started", "node_started:start", "node_completed",
                                    "node_started:memory", "node_completed", "node_started:retrieval",
                                    "node_completed", "node_started:model"]
    await sync_to_async(assert_streamed_as_stored)(execution, frames)
    await sync_to_async(assert_all)(execution)


@TRANSACTIONAL
async def test_a_write_that_fails_behind_the_call_ends_the_run_with_what_it_held(async_client, alice, monkeypatch,
                                                                                 model_asked, write_started):
    def refused(recorder):
        model_asked.wait(timeout=5)
        raise OperationalError("disk I/O error")

    first_write_watched(monkeypatch, refused, write_started)
    await async_client.aforce_login(alice)

    frames = await frames_of(async_client, "hello there")

    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert execution.status == "failed" and execution.error_type == "internal_error"
    assert "could not be written: OperationalError: disk I/O error" in execution.error_message
    assert "token" not in [f.event for f in frames]  # nothing streamed past the write that failed
    assert frames[-1].event == "workflow_failed"
    # what the failed write held is written with the run's end: every node, and the call made, estimated (I5)
    nodes = [node async for node in execution.node_executions.order_by("index").values_list("node_id", flat=True)]
    assert nodes == ["start", "memory", "retrieval", "model"]
    assert execution.llm_calls == 1 and execution.prompt_tokens > 0
    await sync_to_async(assert_all)(execution)


@contextmanager
def writers_busy():
    """Every writer thread busy until the block ends: a write handed meanwhile is not taken."""
    release, busy = threading.Event(), []
    for _ in range(WRITER_THREADS):
        writing = WriteBehind()
        writing.hand(lambda: release.wait(timeout=30), lambda fragments: None)
        busy.append(writing)
    try:
        yield
    finally:
        release.set()
        for writing in busy:
            writing.settle()


def test_a_write_no_writer_has_taken_yet_is_made_by_the_run_itself():
    """When the run needs its recorder again before any writer thread took its write (every writer busy, or the
    run never let go of the GIL), it makes the write itself rather than wait, and publishes what streamed behind it
    after it; folded, it is not made, and what streamed behind it is handed back."""
    made_on, published = [], []
    with writers_busy():
        queued = WriteBehind()
        queued.hand(lambda: made_on.append(threading.get_ident()), published.extend)
        assert queued.attach("token 1") and queued.attach("token 2")
        queued.settle()
        assert not queued.attach("token 3")  # nothing under way: published at once by the caller

        folded = WriteBehind()
        folded.hand(lambda: made_on.append("folded"), published.extend)
        folded.attach("token 4")
        assert folded.settle(fold=True) == ["token 4"]

    assert made_on == [threading.get_ident()] and published == ["token 1", "token 2"]


@TRANSACTIONAL
def test_fragments_held_too_long_behind_a_write_no_writer_took_have_the_run_make_it(monkeypatch):
    """A machine too busy to run the writer: once what streams has waited HELD_AT_MOST_S behind the write, the run
    makes the write itself and publishes what waited after it; what streams next goes out at once. Going back to
    its model's stream, the run holds no pooled connection."""
    now = [1000.0]
    monkeypatch.setattr("workflows.writer.monotonic", lambda: now[0])
    made_on, published = [], []

    def write() -> None:
        made_on.append(threading.get_ident())
        WorkflowExecution.objects.exists()  # (a statement: the thread now holds a connection)

    with writers_busy():
        queued = WriteBehind()
        queued.hand(write, published.extend)
        assert queued.attach("token 1")
        now[0] += HELD_AT_MOST_S
        assert queued.attach("token 2") and made_on == []  # not yet
        now[0] += 0.001
        assert queued.attach("token 3")  # published with the write, made here
        assert made_on == [threading.get_ident()] and published == ["token 1", "token 2", "token 3"]
        pooled = bool(connection.settings_dict.get("OPTIONS", {}).get("pool"))
        assert (connection.connection is None) == pooled  # given back to the pool (SQLite's stays with its thread)
        assert not queued.under_way and not queued.attach("token 4")  # at once, by the caller


@pytest.mark.postgres
@TRANSACTIONAL
def test_a_run_waiting_for_its_write_gives_its_pooled_connection_back(monkeypatch):
    """The run borrowed a connection after it handed its write (its cancel poll) and every other one the pool can
    give is taken: waiting for the writer, it gives its own back, and the writer makes the write with it. Held, it
    was a deadlock of every run so waiting (a burst of 30 turns on a pool of 3), each holding the connection its
    writer waited for, until the pool's timeout."""
    from psycopg_pool import PoolTimeout

    pool = connection.pool
    monkeypatch.setattr(pool, "timeout", 3)  # (held, the write fails after 3 s rather than the pool's 30)
    made, others = [], []

    def write() -> None:
        made.append(WorkflowExecution.objects.exists())

    try:
        with writers_busy():
            queued = WriteBehind()
            queued.hand(write, lambda fragments: None)
            WorkflowExecution.objects.exists()  # this thread now holds a connection
            while True:  # and every other one is taken (the pool gives none within 0.5 s)
                try:
                    others.append(pool.getconn(timeout=0.5))
                except PoolTimeout:
                    break
        queued.settle()  # the writers are free: one has taken the write, and waits for a connection
    finally:
        for other in others:
            pool.putconn(other)

    assert made == [False]  # made, on the connection this thread gave back


@pytest.mark.postgres
@TRANSACTIONAL
def test_a_run_waiting_on_its_model_holds_no_pooled_connection_after_its_cancel_poll(api, monkeypatch):
    """A run polls its row for a cancel asked in another process (every CANCEL_POLL_S, between its model's chunks):
    the connection it borrowed for that goes back at once, so a run waiting on a slow model holds none."""
    stream, held = LocalChatModel._stream, []

    def slow(model, *args, **kwargs):  # three chunks 0.25 s apart, then the rest at once
        for number, chunk in enumerate(stream(model, *args, **kwargs)):
            if 1 <= number <= 3:
                time.sleep(CANCEL_POLL_S + 0.05)
                held.append(connection.connection is not None)  # (the run's thread, waiting on its model)
            yield chunk

    monkeypatch.setattr(LocalChatModel, "_stream", slow)
    done = api.post("/api/v1/executions/", {"template": "universal_chat", "input": {"message": "hello there"}},
                    format="json").json()["execution"]

    assert done["status"] == "completed"
    assert held == [False, False, False]
    assert_all(WorkflowExecution.objects.get(pk=done["id"]))


@TRANSACTIONAL
async def test_a_reply_streamed_behind_a_write_no_writer_takes_still_reaches_the_stream_as_it_comes(
        async_client, alice, monkeypatch, settings):
    """Every writer busy and a model whose tokens come 30 ms apart: the write before its call is made by the run
    once its tokens have waited HELD_AT_MOST_S, and the rest reach the stream as they come, not in one burst with
    the run's end."""
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 30
    made = writes_counted(monkeypatch)
    await async_client.aforce_login(alice)

    arrived = []  # (event, when it reached the client)
    with writers_busy():
        response = await async_client.post(URL, {"message": "hello there", "stream": True},
                                           content_type="application/json")
        chunks = []
        async for chunk in response.streaming_content:
            chunks.append(chunk)
            arrived += [(frame.event, time.monotonic()) for frame in parse_sse(chunk.decode())]

    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert execution.status == "completed" and made == [execution.pk, execution.pk]  # before the call, and its end
    tokens = [at for event, at in arrived if event == "token"]
    ended = next(at for event, at in arrived if event == "workflow_completed")
    assert len(tokens) >= 6
    # the tokens after the first few came one by one, 30 ms apart, long before the end (they would all come with
    # it, in one burst, if the write had waited for a writer to the run's end)
    assert ended - tokens[3] > 0.03 * (len(tokens) - 6), (tokens, ended)
    frames = parse_sse(b"".join(chunks).decode())
    await sync_to_async(assert_streamed_as_stored)(execution, frames)
    await sync_to_async(assert_all)(execution)


def writes_counted(monkeypatch) -> list:
    """The run's writes of what it holds (before a wait, and its end), as they are made."""
    write_held, made = ExecutionRecorder.write_held, []

    def counted(recorder, **kwargs):
        made.append(recorder.execution.pk)
        write_held(recorder, **kwargs)

    monkeypatch.setattr(ExecutionRecorder, "write_held", counted)
    return made


@TRANSACTIONAL
@pytest.mark.parametrize("message", ["hello there", "What is 12*7?"])
async def test_a_call_answered_before_any_writer_took_its_write_leaves_it_to_the_run_end(async_client, alice,
                                                                                       monkeypatch, message):
    """A model that answers at once: nothing waited, so the write before its call (two with a tool call) goes with
    the run's end, one transaction, and what the reply streamed reaches the stream in its place among the events."""
    made = writes_counted(monkeypatch)
    await async_client.aforce_login(alice)

    with writers_busy():
        frames = await frames_of(async_client, message)

    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert execution.status == "completed" and made == [execution.pk]  # its end's, alone
    events = [f.event if f.event not in ("node_started", "node_completed")
              else f"{f.event}:{f.envelope['data']['node_id']}" for f in frames]
    fragments = [i for i, event in enumerate(events) if event in ("token", "tool_call_delta")]
    model_calls = events.count("node_started:model")
    assert fragments and model_calls == (2 if "12*7" in message else 1)
    for i in fragments:  # each inside its model node: after its start, before its end and its call's usage
        before = [e for e in events[:i] if e in ("node_started:model", "node_completed:model")]
        assert before[-1] == "node_started:model"
        assert "token_usage" in events[i:] and events[i:].index("node_completed:model") > 0
    await sync_to_async(assert_streamed_as_stored)(execution, frames)
    await sync_to_async(assert_all)(execution)


class Deadlock(Exception):
    sqlstate = "40P01"  # what PostgreSQL says of a deadlock's victim (core.db.retried_on_conflict tries it again)


@TRANSACTIONAL
async def test_tokens_held_for_the_run_end_survive_its_write_tried_again(async_client, alice, monkeypatch):
    """A write folded into the run's end holds the tokens streamed behind it; when that end is rolled back (a
    deadlock's victim) and tried again, they are still published, in their place."""
    write_held, failed = ExecutionRecorder.write_held, []

    def rolled_back_once(recorder, **kwargs):  # after the rows, as the commit would fail
        write_held(recorder, **kwargs)
        if kwargs.get("audits", "all") == "all" and not failed:  # (the end's write: its audit rows with it)
            failed.append(True)
            raise OperationalError("deadlock detected") from Deadlock()

    monkeypatch.setattr(ExecutionRecorder, "write_held", rolled_back_once)
    await async_client.aforce_login(alice)

    with writers_busy():
        frames = await frames_of(async_client, "hello there")

    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert failed and execution.status == "completed"
    tokens = "".join(f.envelope["data"]["text"] for f in frames if f.event == "token")
    assert tokens == execution.output_data["content"] != ""
    await sync_to_async(assert_streamed_as_stored)(execution, frames)
    await sync_to_async(assert_all)(execution)


@TRANSACTIONAL
def test_a_call_that_answers_while_another_waits_leaves_the_waiting_ones_marker_written(api, monkeypatch):
    """Parallel model branches: the write before the second call is not folded by the first call's answer, for the
    second call still waits, and its marker must be on disk while it does (I5)."""
    second_asked, release, arrived = threading.Event(), threading.Event(), []
    stream = LocalChatModel._stream

    def ordered(model, *args, **kwargs):  # the first call asked answers once the second is asked; that one waits
        with lock:
            arrived.append(threading.get_ident())
            first = len(arrived) == 1
        if first:
            second_asked.wait(timeout=10)
        else:
            second_asked.set()
            release.wait(timeout=10)
        yield from stream(model, *args, **kwargs)

    lock = threading.Lock()
    monkeypatch.setattr(LocalChatModel, "_stream", ordered)
    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "a", "type": "model"}, {"id": "b", "type": "model"},
                       {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "a", "parallel": True},
                       {"source": "start", "target": "b", "parallel": True},
                       {"source": "a", "target": "end"}, {"source": "b", "target": "end"}]}
    markers = []

    def both_marked() -> None:  # while the second call waits: both calls' markers on disk
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline and len(markers) < 2:
                markers[:] = [row for row in NodeExecution.objects.filter(node_id__in=("a", "b")).values_list(
                    "output", flat=True) if row.get("call_in_flight")]
                time.sleep(0.02)
        finally:
            release.set()
            connection.close()  # (this thread's: the test database is dropped at the end)

    watcher = threading.Thread(target=both_marked)
    watcher.start()
    with writers_busy():
        done = api.post("/api/v1/executions/", {"graph": graph, "input": {"message": "hello"}},
                        format="json").json()["execution"]
    watcher.join()

    assert len(markers) == 2
    assert done["status"] == "completed" and done["llm_calls"] == 2
    assert_all(WorkflowExecution.objects.get(pk=done["id"]))
