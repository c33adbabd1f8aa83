"""The write a run makes as a model call starts is made on a writer thread while the call goes out
(workflows.writer): the call does not wait for it, yet nothing the run publishes next (its tokens) reaches a watcher
before that write's events, and a write that fails there ends the run like any write that fails."""
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from engine.local_model import LocalChatModel
from tests.api.sse import parse_sse
from tests.invariants import assert_all, assert_streamed_as_stored
from workflows.models import WorkflowExecution
from workflows.recorder import ExecutionRecorder

URL = "/api/v1/chat/"
TRANSACTIONAL = pytest.mark.django_db(transaction=True)


async def frames_of(async_client, message: str) -> list:
    response = await async_client.post(URL, {"message": message, "stream": True}, content_type="application/json")
    assert response.status_code == 200
    return parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())


@pytest.fixture
def model_asked(monkeypatch) -> threading.Event:
    """Set as the local model is asked for its stream (the call has gone out)."""
    asked = threading.Event()
    stream = LocalChatModel._stream

    def watched(model, *args, **kwargs):
        asked.set()
        yield from stream(model, *args, **kwargs)

    monkeypatch.setattr(LocalChatModel, "_stream", watched)
    return asked


def first_write_watched(monkeypatch, what) -> None:
    """`what(recorder)` runs as each run's first write (the one before its model call) starts."""
    write_held, seen = ExecutionRecorder.write_held, set()

    def watched(recorder, **kwargs):
        if recorder.execution.pk not in seen:
            seen.add(recorder.execution.pk)
            what(recorder)
        write_held(recorder, **kwargs)

    monkeypatch.setattr(ExecutionRecorder, "write_held", watched)


@TRANSACTIONAL
async def test_the_model_call_goes_out_while_the_write_before_it_is_made(async_client, alice, monkeypatch,
                                                                         model_asked):
    waited = []  # the first write waits for the model to be asked: made before the call, it would wait in vain
    first_write_watched(monkeypatch, lambda recorder: waited.append(model_asked.wait(timeout=5)))
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
                                                                                 model_asked):
    def refused(recorder):
        model_asked.wait(timeout=5)
        raise OperationalError("disk I/O error")

    first_write_watched(monkeypatch, refused)
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


def test_a_write_no_writer_has_taken_yet_is_made_by_the_run_itself():
    """When the run needs its recorder again before any writer thread took its write (every writer busy, or the
    run never let go of the GIL: a model that answers at once), it makes the write itself rather than wait."""
    from workflows.writer import WRITER_THREADS, WriteBehind

    release, busy = threading.Event(), []
    for _ in range(WRITER_THREADS):  # every writer thread busy
        writing = WriteBehind()
        writing.hand(lambda: release.wait(timeout=10))
        busy.append(writing)
    made_on = []
    queued = WriteBehind()
    queued.hand(lambda: made_on.append(threading.get_ident()))

    queued.settle()

    assert made_on == [threading.get_ident()]
    release.set()
    for writing in busy:
        writing.settle()
