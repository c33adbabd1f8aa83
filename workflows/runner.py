"""The runner: the one place runs execute (docs/architecture.md#the-run-path). A sync run runs in its caller's thread
(`run`), a streamed one on the runner's threads (`submit`), a background or scheduled one in a worker's task
(workflows.tasks → `run`); each way the same `run` of a RunStart: the graph with an ExecutionRecorder, then its
ending (workflows.ending: `execution_finish`, the terminal transaction, or `end_from_ledger` when it cannot be
written).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone
from django.utils.module_loading import import_string

from conversations.models import Message
from core.cache import hot_reads
from core.db import connections_give_back, database_reachable
from core.errors import RunError, Unavailable
from core.serving import serving_stopped
from core.threads import ProcessThreads
from core.tracing import tracing_on
from engine.compile import graph_run
from engine.config import checkpoints_every_step
from engine.graph import Graph, parse_graph
from engine.python_graphs import (
    MESSAGES_USAGE,
    booked_from_json,
    graph_input_of,
    graph_stream_run,
    registered_graph_name,
)
from engine.runtime import RunContext
from workflows.ending import end_from_ledger, execution_finish, execution_pause
from workflows.heartbeat import heartbeat
from workflows.models import WorkflowExecution
from workflows.recorder import ExecutionRecorder, run_recorder
from workflows.writer import NotCreated

logger = logging.getLogger(__name__)
Status = WorkflowExecution.Status

ENDING_LOOK_S = 1.0  # how often an ending the database could not take looks whether it answers again (_database_back)
_threads = ProcessThreads(lambda: settings.CHATTER_RUN_THREADS, "chatter-run")


class _LeftToSweep(Exception):
    """The run's process stops while the database is out of reach: its ending is not waited for (_database_back)."""


@dataclass(frozen=True, kw_only=True)
class RunStart:
    """What the runner is asked to run: a written, claimed (`running`) execution, and what its caller has for it.
    `user_message`: the turn's own message; `graph` and `prices`: what the request's plan already read (else from
    the row); `resume` (interrupt id → answer): a paused run goes on from its last checkpoint; `after_crash`: a run
    whose worker died goes on from its last checkpoint (or from its input when none was written); `created`: a
    fresh run started while its request still writes it (workflows.services.runs.execution_start_streamed), whose
    first node waits for that write (the Future's result: the turn's user message) and which ends with nothing
    written if it was refused."""

    execution: WorkflowExecution
    user_message: Message | None = None
    prices: dict | None = None
    graph: Graph | None = None
    resume: dict | None = None
    after_crash: bool = False
    created: Future | None = None

    @property
    def fresh(self) -> bool:
        """The run starts from its input (neither resumed nor taken over after a crash)."""
        return self.resume is None and not self.after_crash


def submit(start: RunStart) -> None:
    """Run a written, running execution on one of the runner's CHATTER_RUN_THREADS threads."""
    execution = start.execution
    heartbeat.add(execution.pk)  # a run waiting for a free thread still shows that its process is alive

    def work() -> None:
        try:
            run(start)
        except Exception:  # noqa: BLE001 - run() ends every run it can; this is the last word
            logger.exception("execution %s crashed in the runner", execution.pk)
        finally:
            heartbeat.discard(execution.pk)
            connections_give_back()  # a pooled connection goes back (SQLite's stays with the thread for its next run)

    _threads.submit(work)


def runs_settled(timeout_s: float) -> bool:
    """Wait, `timeout_s` at most, for the runs this process's threads run to end, all of them: their spans too, which
    end after their terminal event (a command's end, before its last spans are exported); whether they have."""
    return _threads.settled(timeout_s)


def run(start: RunStart) -> WorkflowExecution:
    """Run a claimed (`running`) execution until it ends or waits for input (`waiting`). Every way it can go
    wrong, its set-up included, still ends it through execution_finish. Its graph's checkpoints are held for the
    recorder's writes (a CheckpointHold handed to it). Its hot reads read their version once (core.cache)."""
    with hot_reads.scope():
        return _run_held(start)


def _run_held(start: RunStart) -> WorkflowExecution:
    from workflows.checkpointer import checkpointer  # loads LangGraph, which commands without a run never need

    execution = start.execution
    graph = start.graph or parse_graph(execution.graph)
    # A registered graph's thread is its conversation's (the graph's state carries over from run to run), and so
    # is a graph's whose conversation keeps its state (a thread of the Agent Server API: on_thread); any other
    # run's thread is its own.
    registered = registered_graph_name(graph)
    on_thread = bool(registered or execution.input_data.get("on_thread"))
    thread_id = str(execution.conversation_id) if on_thread and execution.conversation_id else str(execution.pk)
    held = checkpointer.hold(thread_id, execution_id=execution.pk,
                             fresh=start.fresh and thread_id == str(execution.pk))
    spans = ended = None
    if tracing_on():  # its spans, under the context stored with it (core.tracing)
        from workflows.run_spans import RunSpans

        spans = RunSpans(execution, graph_name=registered, resumed=not start.fresh)
    try:
        with spans.current() if spans is not None else nullcontext():
            ended = _run(start, graph=graph, checkpointer=checkpointer, held=held, registered=registered,
                         spans=spans)
        return ended
    finally:
        checkpointer.release(thread_id)
        if spans is not None:
            spans.ended(ended)


def _answering(run_input: dict) -> dict | None:
    """What a new run of a graph on its thread answers (Command(resume=…): the questions its thread's state holds,
    whose waiting run was cancelled), by interrupt id, until it has saved a checkpoint of its own."""
    return (run_input.get("command") or {}).get("resume")


def _run(start: RunStart, *, graph: Graph, checkpointer, held, registered: str | None,
         spans=None) -> WorkflowExecution:
    execution, resume, fresh = start.execution, start.resume, start.fresh
    from_checkpoint = False
    thread_id = held.thread_id
    try:
        recorder = run_recorder(execution, fresh=fresh, user_message=start.user_message if fresh else None,
                                prices=start.prices, checkpoints=held, spans=spans)
        if fresh:
            ctx = RunContext(config=execution.config, hooks=recorder)
        else:
            usage, llm_calls = recorder.resumed()
            ctx = RunContext(config=execution.config, hooks=recorder, usage=usage, llm_calls=llm_calls,
                             tool_calls=recorder.tool_calls)
            latest = checkpointer.get_tuple({"configurable": {"thread_id": thread_id}}) if resume is None else None
            # on a conversation's thread, only a checkpoint this run saved (the latest may be an earlier run's)
            from_checkpoint = latest is not None and (thread_id == str(execution.pk) or (
                latest.metadata or {}).get("run_id") == str(execution.pk))
    except Exception as exc:  # noqa: BLE001 - without a recorder the run can only end from its rows
        logger.exception("execution %s could not start", execution.pk)
        ended = end_from_ledger(execution_id=execution.pk, from_statuses=(Status.RUNNING,), error=RunError(
            f"{type(exc).__name__}: {exc}", error_type="internal_error"))
        return ended if ended is not None else WorkflowExecution.objects.get(pk=execution.pk)
    state = error = None
    try:
        if fresh and start.created is not None:  # its graph sets up while its request writes it: its first node
            recorder.writing.after(start.created, lambda message: _created(recorder, message))  # waits for that
        elif fresh:
            recorder.started(_started(execution))
        elif resume is not None:
            recorder.emit("workflow_resumed", {"answered": sorted(resume)})
        else:
            recorder.emit("workflow_resumed", {"answered": [], "attempt": execution.resume_attempts,
                                               "from_checkpoint": from_checkpoint})
        carried = thread_id != str(execution.pk)
        if resume is None and not from_checkpoint and not carried:  # a fork starts (again, after a crash)
            from_checkpoint = _fork_start(execution, checkpointer=checkpointer, thread_id=thread_id)  # from its parent's
        recorder.heartbeat_start()
        run_input = execution.input_data
        if registered:
            state = graph_stream_run(
                registered, ctx=ctx, checkpointer=checkpointer, graph_input=graph_input_of(
                    run_input, message_id=str(recorder.user_message.pk) if recorder.user_message else None),
                thread_id=thread_id, resume=resume, from_checkpoint=from_checkpoint,
                configurable={**(run_input.get("configurable") or {}), "run_id": str(execution.pk)},
                context=run_input.get("context"),
                booked=booked_from_json((execution.output_data or {}).get("messages_usage")),
                streaming=run_input.get("streaming") or "classic",
                stream_checkpoints=bool(run_input.get("stream_checkpoints")),
                graph_streams=run_input.get("graph_streams"), subgraphs=bool(run_input.get("stream_subgraphs")),
                checkpoint_id=run_input.get("checkpoint_id") if resume is None and not from_checkpoint else None,
                interrupt_before=run_input.get("interrupt_before"), interrupt_after=run_input.get("interrupt_after"),
                recursion_limit=run_input.get("recursion_limit"), command=run_input.get("command"),
                store=import_string(settings.CHATTER_GRAPH_STORE)(owner=execution.owner))
        else:
            # A thread's state is saved at every step (its history, forks); a run's own only at its pauses unless its
            # config asks: a run that cannot pause, and does not go on from a checkpoint, saves nothing.
            every_step = carried or checkpoints_every_step(execution.config, mode=execution.mode)
            saves = every_step or graph.can_pause or resume is not None or from_checkpoint
            state = graph_run(graph, ctx=ctx, message=run_input.get("message"),
                              variables=run_input.get("variables"), messages=run_input.get("messages"),
                              checkpointer=checkpointer if saves else None, thread_id=thread_id,
                              resume=resume if resume is not None or from_checkpoint else _answering(run_input),
                              from_checkpoint=from_checkpoint, every_step=every_step, carried=carried,
                              checkpoint_id=run_input.get("checkpoint_id"),
                              message_id=str(recorder.user_message.pk) if carried and recorder.user_message else None,
                              run_id=str(execution.pk), stream_checkpoints=bool(run_input.get("stream_checkpoints")),
                              interrupt_before=run_input.get("interrupt_before"),
                              interrupt_after=run_input.get("interrupt_after"),
                              recursion_limit=run_input.get("recursion_limit"))
    except NotCreated:  # its request's write of it was refused (and the request answered why): no row to end
        return execution
    except RunError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - an engine bug still ends the run, with its usage kept
        logger.exception("execution %s crashed", execution.pk)
        error = RunError(f"{type(exc).__name__}: {exc}", error_type="internal_error")
    finally:
        recorder.forget()
    interrupts = (state or {}).get("__interrupt__") if error is None else None
    return run_end(execution=execution, recorder=recorder, ctx=ctx, state=state, error=error, interrupts=interrupts)


def _started(execution: WorkflowExecution) -> dict:
    """A fresh run's workflow_started event."""
    return {
        "workflow_type": execution.workflow_type,
        "template": execution.template.key if execution.template_id else None,
        "definition": str(execution.definition_id) if execution.definition_id else None,
        "conversation_id": str(execution.conversation_id) if execution.conversation_id else None,
        "provider": execution.provider, "model": execution.model,
        **({"forked_from": {"execution_id": str(execution.forked_from_id),
                            "checkpoint_id": execution.forked_from_checkpoint}}
           if execution.forked_from_checkpoint else {}),
    }


def _created(recorder: ExecutionRecorder, user_message: Message | None) -> None:
    """A run started while its request wrote it, once that is written: it has its user message and it starts."""
    recorder.reads.user_message = user_message
    recorder.started(_started(recorder.execution))


def run_end(*, execution: WorkflowExecution, recorder: ExecutionRecorder, ctx: RunContext, state: dict | None,
            error: RunError | None, interrupts: list | None = None, ending: dict | None = None) -> WorkflowExecution:
    """End a run that ran here (or pause it, with `interrupts`): execution_finish, or, when its ending cannot be
    written, from its rows (end_from_ledger). An ending that fails as the database is out of reach is tried again
    once it answers (_database_back), so the run's own usage and reply are booked, not the sweep's estimate; unless
    the process stops meanwhile (SIGTERM): then the run is left `running`, its heartbeat silent, for the recovery
    sweep to end once the database is back, as a crashed process's (returned as it was).
    `ending`: how the reply ended (finish reason, tool calls), for a run that has no graph state to read it from
    (the gateway's pass-through)."""
    waited = False
    try:
        while True:
            try:
                recorder.settled(fold=True)  # its write under way first (workflows.writer): what it raised ends the
                # run here; one no writer took yet is made with the run's end
                if interrupts:
                    return execution_pause(execution=execution, recorder=recorder, ctx=ctx, interrupts=interrupts,
                                           booked=(state or {}).get(MESSAGES_USAGE))
                return execution_finish(execution=execution, recorder=recorder, ctx=ctx, state=state, error=error,
                                        ending=ending)
            except (OperationalError, Unavailable):  # deadlocked past its retries, SQLite busy past its timeout, the
                # connection lost, the database out of reach: nothing was written
                logger.warning("execution %s: its ending failed", execution.pk, exc_info=not waited)
                waited = True
                if _database_back(execution):
                    continue
            except Exception as exc:  # noqa: BLE001 - e.g. a row it writes is refused: end the run from its rows
                logger.exception("execution %s could not be ended normally", execution.pk)
                error = RunError(f"the run could not be recorded: {type(exc).__name__}: {exc}",
                                 error_type="internal_error")
            break
    except _LeftToSweep:
        logger.warning("execution %s: its process stops while the database is out of reach; the run is left to the "
                       "recovery sweep", execution.pk)
        return execution
    finally:
        if waited:  # (the heartbeat it kept beating while it waited)
            heartbeat.discard(execution.pk)
    try:  # what the run still holds (its last LLM calls) goes on disk before the run ends from its rows (I5)
        recorder.flush()
    except Exception:  # noqa: BLE001
        logger.exception("execution %s: its last trace could not be written", execution.pk)
    ended = end_from_ledger(execution_id=execution.pk, error=error or RunError(
        "the run could not be recorded", error_type="internal_error"), from_statuses=(Status.RUNNING,))
    return ended if ended is not None else WorkflowExecution.objects.get(pk=execution.pk)


def _database_back(execution: WorkflowExecution) -> bool:
    """After a failed ending: whether the database, out of reach, answers again, for the ending to be tried again.
    It is waited for (each look waits for a connection up to the pool's timeout, then ENDING_LOOK_S more) until the
    sweep would end the run whatever its heartbeat (its timeout passed: execution_swept_after); meanwhile the run's
    heartbeat beats (its beats land once the database is back), so the sweep does not take a live run over. False
    when the database answered at once (the ending failed for another reason) or did not answer in time; raises
    _LeftToSweep once its server has stopped serving (core.serving.serving_stopped): the process would wait for it
    to exit."""
    from workflows.services.recovery import execution_swept_after  # (recovery's services import the runner)

    if database_reachable():
        return False
    logger.warning("execution %s: the database is out of reach; its ending waits for it", execution.pk)
    heartbeat.add(execution.pk)
    while timezone.now() < execution_swept_after(execution):
        if serving_stopped():
            raise _LeftToSweep
        connections_give_back()
        time.sleep(ENDING_LOOK_S)
        if database_reachable():
            logger.info("execution %s: the database answers again; its ending is tried again", execution.pk)
            return True
    logger.warning("execution %s: the database stayed out of reach until its timeout; it is left to the sweep",
                   execution.pk)
    return False


def _fork_start(execution: WorkflowExecution, *, checkpointer, thread_id: str) -> bool:
    """A fork's graph goes on from its parent's checkpoint, copied (without its pending writes: the step after
    it runs again) as the first of its own thread's. Whether the run is a fork."""
    if not execution.forked_from_checkpoint or execution.forked_from_id is None:
        return False
    source = checkpointer.get_tuple({"configurable": {
        "thread_id": str(execution.forked_from_id), "checkpoint_ns": "",
        "checkpoint_id": execution.forked_from_checkpoint}})
    if source is None:
        raise RunError("the checkpoint to fork from is gone (pruned with its run's events)", error_type="not_found")
    checkpointer.put({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, source.checkpoint,
                     {**source.metadata, "source": "fork"}, {})
    return True
