"""/langgraph/'s runs: start (background, streamed, waited for), list, read, join, stream again, cancel."""
from __future__ import annotations

from channels.db import database_sync_to_async
from rest_framework.response import Response

from agent_server.bodies import CancelManyQuery, CancelQuery, RunBatch, RunCreate, RunList, RunsCancel
from agent_server.http import READ, ApiError, LangGraphView, answer_when_ended
from agent_server.run_selectors import (
    agent_run_of,
    is_registered_run,
    run_as_dict,
    run_get,
    run_list,
    run_values,
    runs_to_cancel,
)
from agent_server.runs import (
    run_cancel,
    run_cancel_and_roll_back,
    run_cancel_if_in_progress,
    run_start,
    runs_cancel,
    runs_start_batch,
)
from agent_server.stream import FrameMaker, feed_until_waiting, graph_streams_of, langgraph_stream, parse_last_event_id
from core.api.sse import event_stream_response
from workflows.models import WorkflowExecution
from workflows.realtime import execution_feed

Mode = WorkflowExecution.Mode

def _run_path(execution) -> str:
    if execution.conversation_id:
        return f"/threads/{execution.conversation_id}/runs/{execution.pk}"
    return f"/runs/{execution.pk}"


def _stream_response(started_or_feed, *, maker: FrameMaker, resume=None, execution=None, on_disconnect=None):
    headers = {}
    if execution is not None:
        headers["Content-Location"] = _run_path(execution)
        if execution.conversation_id:
            headers["Location"] = f"{_run_path(execution)}/stream"  # relative to the API's root, as the SDK joins it
    return event_stream_response(langgraph_stream(started_or_feed, maker=maker, resume=resume,
                                                  on_disconnect=on_disconnect), headers=headers)


class RunsView(LangGraphView):
    """GET: the thread's runs; POST: start one in the background."""

    key_scope = "runs"
    starts_runs = True

    def get(self, request, thread_id):
        query = self.query(RunList, lists=("select",))
        found = [run_as_dict(execution) for execution in run_list(
            user=request.user, thread_id=thread_id, limit=query.limit, offset=query.offset,
            status=query.status or None)]
        if query.select:
            found = [{field: run[field] for field in query.select} for run in found]
        return Response(found)

    def post(self, request, thread_id=None):
        started = run_start(owner=request.user, body=self.body(RunCreate), mode=Mode.BACKGROUND,
                            thread_id=thread_id, api_key=request.auth)
        return Response(run_as_dict(started.execution), headers={"Content-Location": _run_path(started.execution)})


class StatelessRuns(RunsView):
    http_method_names = ["post"]


class RunsBatch(LangGraphView):
    """client.runs.create_batch: background runs started at once, all or none; answers them in order."""

    key_scope = "runs"
    starts_runs = True

    def post(self, request):
        batch = self.body(RunBatch)
        return Response([run_as_dict(execution) for execution in runs_start_batch(
            owner=request.user, bodies=batch.root, api_key=request.auth)])


class RunsStream(LangGraphView):
    key_scope = "runs"
    starts_runs = True

    def post(self, request, thread_id=None):
        body = self.body(RunCreate)
        started = run_start(owner=request.user, body=body, mode=Mode.STREAM, thread_id=thread_id,
                            api_key=request.auth)
        maker = FrameMaker(run_id=str(started.execution.pk), thread_id=started.thread_id, modes=started.modes,
                           inputs=started.inputs, native=is_registered_run(started.execution),
                           subgraphs=body.stream_subgraphs, graph_streams=graph_streams_of(started.execution))
        on_disconnect = _canceller(started.execution.pk, request.user) if body.on_disconnect == "cancel" else None
        return _stream_response(started.feed, maker=maker, execution=started.execution, on_disconnect=on_disconnect)


def _canceller(execution_id, user):
    """What a stream does when its client goes away before the end with on_disconnect="cancel" (a run's stream) or
    cancel_on_disconnect=true (joining one): cancel the run it was reading."""

    async def on_disconnect() -> None:
        await database_sync_to_async(run_cancel_if_in_progress)(execution_id=execution_id, actor=user)

    return on_disconnect


class RunsWait(LangGraphView):
    """Run here to its end (or, queued behind the thread's run, wait for a worker to run it, holding no thread
    meanwhile) and answer its values."""

    key_scope = "runs"
    starts_runs = True

    def post(self, request, thread_id=None):
        started = run_start(owner=request.user, body=self.body(RunCreate), mode=Mode.SYNC, thread_id=thread_id,
                            api_key=request.auth)
        execution = started.execution
        return answer_when_ended(execution, lambda: _values_now(execution, started.inputs),
                                 headers=_joined_at(execution))


def _joined_at(execution) -> dict:
    """Where a run is (Content-Location) and where it is joined (Location: the SDK reconnects there when the
    answer is cut off), as the stock server names them; relative to the API's root, as the SDK resolves them."""
    return {"Location": f"{_run_path(execution)}/join", "Content-Location": _run_path(execution)}


def _values_now(execution, inputs=None) -> dict:
    execution.refresh_from_db()
    return run_values(execution=execution, inputs=inputs)


class RunDetail(LangGraphView):
    key_scope = "runs"

    def get(self, request, thread_id, run_id):
        return Response(run_as_dict(run_get(user=request.user, thread_id=thread_id, run_id=run_id)))

    def delete(self, request, thread_id, run_id):
        run_get(user=request.user, thread_id=thread_id, run_id=run_id)
        raise ApiError(422, "runs are kept: their tokens and cost are part of the record")


class RunJoin(LangGraphView):
    """A run's values once it has ended (a run without a thread: under /runs/, where its /runs/wait names it)."""

    def get(self, request, run_id, thread_id=None):
        execution = run_get(user=request.user, thread_id=thread_id, run_id=run_id)
        return answer_when_ended(execution, lambda: _values_now(execution))


class RunJoinStream(LangGraphView):
    def get(self, request, thread_id, run_id):
        execution = run_get(user=request.user, thread_id=thread_id, run_id=run_id)
        resume = parse_last_event_id(request.headers.get("Last-Event-ID"))
        agent_run = agent_run_of(execution)
        modes = [mode for mode in request.query_params.getlist("stream_mode") if mode] or (
            agent_run.stream_mode if agent_run else ["values"])
        maker = FrameMaker(run_id=str(execution.pk), thread_id=str(execution.conversation_id), modes=modes,
                           inputs=[], native=is_registered_run(execution), graph_streams=graph_streams_of(execution))
        feed = feed_until_waiting(execution_feed(execution.pk, after=resume[0] - 1 if resume else 0),
                                  execution_id=execution.pk)
        return _stream_response(feed, maker=maker, resume=resume, on_disconnect=_canceller(
            execution.pk, request.user) if self.flag("cancel_on_disconnect") else None)

    @property
    def key_scope_read(self) -> str:
        return "runs" if self.flag("cancel_on_disconnect") else READ  # leaving then cancels the run


def _run_now(execution) -> dict:
    execution.refresh_from_db()
    return run_as_dict(execution)


class RunCancel(LangGraphView):
    """Ask the run to stop (at once if pending, at its next token or node boundary if running); with ?wait=1,
    answer once it has ended."""

    key_scope = "runs"

    def post(self, request, thread_id, run_id):
        query = self.query(CancelQuery)
        execution = run_get(user=request.user, thread_id=thread_id, run_id=run_id)
        if query.action == "rollback":  # answered once it has stopped and left the thread
            return Response(run_as_dict(run_cancel_and_roll_back(execution=execution, actor=request.user)))
        execution = run_cancel(execution=execution, actor=request.user)
        if query.wait:
            return answer_when_ended(execution, lambda: _run_now(execution), headers=_joined_at(execution))
        body = _run_now(execution)
        return Response(body, status=200 if body["status"] not in ("pending", "running") else 202)


class RunsCancelMany(LangGraphView):
    """client.runs.cancel_many: the runs named, or those of a status, cancelled (or rolled back) at once; 204."""

    key_scope = "runs"

    def post(self, request):
        query, body = self.query(CancelManyQuery), self.body(RunsCancel)
        executions = runs_to_cancel(user=request.user, thread_id=body.thread_id, run_ids=body.run_ids,
                                    status=body.status)
        runs_cancel(executions=executions, action=query.action, actor=request.user)
        return Response(status=204)
