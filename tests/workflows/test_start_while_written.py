"""On PostgreSQL a streamed run that writes only new rows starts on its thread while its request writes it
(workflows.services.runs.execution_start_streamed): its graph sets up meanwhile, its first node waits for that
write, and if the write is refused the run ends with nothing written and nothing logged as a crash. (On SQLite
the write is CPU in this process, and the run starts after it.)"""
import logging
import threading

import pytest
from asgiref.sync import sync_to_async

from tests.api.conftest import assert_error, row_counts
from tests.api.sse import parse_sse
from tests.invariants import assert_all, assert_streamed_as_stored
from workflows import runner
from workflows.models import ExecutionEvent, NodeExecution, WorkflowExecution
from workflows.services import runs
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create
from workflows.writer import NotCreated

URL = "/api/v1/chat/"
TRANSACTIONAL = pytest.mark.django_db(transaction=True)
pytestmark = pytest.mark.postgres


@pytest.fixture
def graph_watched(monkeypatch) -> dict:
    """`entered` is set as a run's graph starts on the runner's thread; `ended` as it returns, with what it raised."""
    seen = {"entered": threading.Event(), "ended": threading.Event(), "raised": []}
    graph_run = runner.graph_run

    def watched(*args, **kwargs):
        seen["entered"].set()
        try:
            return graph_run(*args, **kwargs)
        except BaseException as exc:
            seen["raised"].append(type(exc))
            raise
        finally:
            seen["ended"].set()

    monkeypatch.setattr(runner, "graph_run", watched)
    return seen


@TRANSACTIONAL
async def test_the_graph_sets_up_while_its_request_writes_the_run(async_client, alice, monkeypatch, graph_watched):
    waited = []  # the request's write waits for the run's graph to start: started after it, it would wait in vain
    written = runs._run_written

    def watched(*args, **kwargs):
        waited.append(graph_watched["entered"].wait(timeout=5))
        return written(*args, **kwargs)

    monkeypatch.setattr(runs, "_run_written", watched)
    await async_client.aforce_login(alice)

    response = await async_client.post(URL, {"message": "hello there", "stream": True},
                                       content_type="application/json")
    frames = parse_sse(b"".join([chunk async for chunk in response.streaming_content]).decode())

    assert response.status_code == 200 and waited == [True]
    execution = await WorkflowExecution.objects.aget(owner=alice)
    assert execution.status == "completed"
    events = [f.event if f.event != "node_started" else f"node_started:{f.envelope['data']['node_id']}"
              for f in frames]
    assert events[:4] == ["workflow_started", "node_started:start", "node_completed", "node_started:memory"]
    assert frames[0].envelope["data"]["conversation_id"] == str(execution.conversation_id)
    await sync_to_async(assert_streamed_as_stored)(execution, frames)
    await sync_to_async(assert_all)(execution)


@TRANSACTIONAL
async def test_a_run_whose_write_is_refused_after_its_graph_started_ends_with_nothing_written(
        async_client, alice, settings, monkeypatch, graph_watched, caplog):
    settings.CHATTER_MAX_CONCURRENT_RUNS = 1
    other = await sync_to_async(execution_create)(ChatRequest(owner=alice, message="elsewhere", mode="background"))
    await WorkflowExecution.objects.filter(pk=other.pk).aupdate(status="running")  # in progress in another process
    for seen in (graph_watched["entered"], graph_watched["ended"], graph_watched["raised"]):
        seen.clear()  # what that run's own graph did (django-q runs it at once here)
    before = await sync_to_async(row_counts)()
    written = runs._run_written

    def watched(*args, **kwargs):  # the run's graph is under way before its write is refused
        assert graph_watched["entered"].wait(timeout=5)
        return written(*args, **kwargs)

    monkeypatch.setattr(runs, "_run_written", watched)
    await async_client.aforce_login(alice)

    with caplog.at_level(logging.WARNING, logger="workflows"):
        response = await async_client.post(URL, {"message": "hello there", "stream": True},
                                           content_type="application/json")
        assert_error(response, 429, "too_many_runs")
        assert await sync_to_async(graph_watched["ended"].wait)(5)

    assert graph_watched["raised"] == [NotCreated]  # it stopped at its first node, which waited for the write
    assert await sync_to_async(row_counts)() == before
    assert not await NodeExecution.objects.exclude(execution=other).aexists()
    assert not await ExecutionEvent.objects.exclude(execution=other).aexists()
    assert [record.getMessage() for record in caplog.records
            if record.name.startswith("workflows") and record.levelno >= logging.WARNING] == []  # no crash logged
