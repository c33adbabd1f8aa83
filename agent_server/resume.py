"""Runs of the Agent Server API that go on from a checkpoint: `command={"resume": …}` answers a thread's run waiting
for input (the same run goes on), `checkpoint_id` forks a new run from one of a thread's checkpoints."""
from __future__ import annotations

from typing import AsyncIterator

from agent_server.bodies import RunCreate
from agent_server.models import AgentRun
from agent_server.state import checkpoint_run
from agent_server.stream import graph_streams_asked
from agent_server.threads import thread_get
from core.errors import Conflict, InvalidInput
from workflows.models import WorkflowExecution
from workflows.services.runs import waiting_run_input_set
from workflows.services.waiting import execution_resume, questions_answered

Mode = WorkflowExecution.Mode
Status = WorkflowExecution.Status


def _waiting_run(*, owner, thread_id) -> WorkflowExecution:
    if thread_id is None:
        raise InvalidInput("command.resume needs a thread: it answers the thread's run waiting for input")
    conversation = thread_get(user=owner, thread_id=thread_id)
    execution = WorkflowExecution.objects.select_related("template", "owner").filter(
        conversation_id=conversation.pk, status=Status.WAITING).order_by("-created_at").first()
    if execution is None:
        raise Conflict("no run of this thread is waiting for input", code="not_waiting")
    return execution


def run_resume(*, owner, body: RunCreate, mode: str, thread_id) -> tuple[WorkflowExecution, AsyncIterator | None]:
    """`command={"resume": …}`: the thread's waiting run goes on with the answer through the one resume path
    (workflows.services.waiting: checked against its question's schema, claimed, run from its checkpoint by the
    same runner, accounted on the same run). The run that goes on IS the waiting run: its id is the one the
    interrupted run had. `resume` answers the one question, or several by interrupt id ({id: answer}). Returns the
    run (as it is after the answer, in sync mode: ended or waiting again) and, for a stream, its feed."""
    unknown = sorted(set(body.command) - {"resume"})
    if unknown or "resume" not in body.command:
        raise InvalidInput(f"only command.resume is supported (not {unknown or ['an empty command']}): Chatter's "
                           "graphs are run from their own edges")
    execution = _waiting_run(owner=owner, thread_id=thread_id)
    _graph_streams_set(execution, body.stream_mode, subgraphs=body.stream_subgraphs)
    answer = _answer_given(body.command["resume"], questions=(execution.output_data or {}).get("input_required") or [])
    outcome = execution_resume(execution=execution, actor=owner, mode=mode, **answer)
    AgentRun.objects.update_or_create(execution_id=execution.pk, defaults={"stream_mode": body.stream_mode},
                                      create_defaults={"assistant_id": body.assistant_id,
                                                       "metadata": body.metadata or {}, "stream_mode": body.stream_mode,
                                                       "multitask_strategy": body.multitask_strategy})
    return (execution, outcome) if mode == Mode.STREAM else (outcome, None)


def _answer_given(resume, *, questions: list[dict]) -> dict:
    """command.resume as the answer to the one question, or as answers by interrupt id when it is an object of the
    questions' ids."""
    by_id = isinstance(resume, dict) and resume and set(resume) <= {q["interrupt_id"] for q in questions}
    return {"answers": resume} if by_id else {"answer": resume}


def unwaited_answers(*, resume, questions: list[dict]) -> dict:
    """command.resume answering questions a thread's state holds that no run waits on (its waiting run was
    cancelled): the answers by interrupt id, checked as a waiting run's are (workflows.services.waiting)."""
    return questions_answered(questions=questions, **_answer_given(resume, questions=questions))


def _graph_streams_set(execution: WorkflowExecution, modes: list[str], *, subgraphs: bool) -> None:
    """A registered graph's run goes on with the graph's own streams its resume's stream shows (agent_server.stream
    graph_streams_asked; its subgraphs' values and tasks or not), written on it before it is claimed."""
    from engine.graph import parse_graph
    from engine.python_graphs import registered_graph_name

    asked = {"graph_streams": graph_streams_asked(modes), "stream_subgraphs": subgraphs}
    if registered_graph_name(parse_graph(execution.graph)) is None or asked == {
            "graph_streams": execution.input_data.get("graph_streams", []),
            "stream_subgraphs": bool(execution.input_data.get("stream_subgraphs"))}:
        return
    execution.input_data = {**execution.input_data, **asked}
    waiting_run_input_set(execution_id=execution.pk, input_data=execution.input_data)


def fork_request(*, owner, body: RunCreate, thread_id) -> dict:
    """`checkpoint_id` (or `checkpoint`): the request of a new run of that checkpoint's graph going on from it
    (a fork: workflows.services.runs.fork_plan), started like any run (agent_server.runs). On a thread,
    the checkpoint must be one of the thread's; the fork, like every fork, runs outside the conversation (which
    stays as it was) with accounting of its own."""
    checkpoint_id = body.fork_from()
    if thread_id is not None:
        checkpoint_run(conversation=thread_get(user=owner, thread_id=thread_id), checkpoint_id=checkpoint_id)
    return {"owner": owner, "from_checkpoint": checkpoint_id}
