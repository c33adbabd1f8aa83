"""Runs that wait for a person (a `human_input` node, docs/operations/durable-runs.md): answering them, and ending
those left unanswered.

A waiting run holds nothing but rows: its questions (`output_data.input_required`, each with its LangGraph
interrupt id) and its graph's checkpoints. An answer is checked against its question's JSON Schema before anything
is written; then the run is claimed back to `running` (one answer wins) and goes on from its last checkpoint in
the mode asked for, in whichever process got the answer (workflows.runner); in background mode it goes back to
`pending` with its answers kept on it (`output_data.answers`), for a worker to claim as any queued run."""
from __future__ import annotations

from typing import Any, AsyncIterator

from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from core.errors import Conflict, InvalidInput, RunCancelled, RunError
from engine.json_schemas import schema_validator
from workflows import runner
from workflows.ending import end_from_ledger
from workflows.models import WorkflowExecution
from workflows.realtime import execution_feed, execution_subscribe, feed_until_paused
from workflows.services.queue import execution_enqueue

Status = WorkflowExecution.Status
Mode = WorkflowExecution.Mode
NO_ANSWER = object()


def answers_check(*, execution: WorkflowExecution, answer: Any = NO_ANSWER, answers: dict | None = None) -> dict:
    """The waiting run's answers by interrupt id, each valid against its question's schema; else InvalidInput (a
    400)."""
    if execution.status != Status.WAITING:
        raise Conflict(f"the run is {execution.status}, not waiting for input", code="not_waiting")
    return questions_answered(questions=(execution.output_data or {}).get("input_required") or [], answer=answer,
                              answers=answers)


def questions_answered(*, questions: list[dict], answer: Any = NO_ANSWER, answers: dict | None = None) -> dict:
    """The answers to these questions (each as workflows.ending.question_of has it) by interrupt id: `answer` to
    the one question, or `answers` by interrupt id, each valid against its question's schema; else InvalidInput."""
    from jsonschema import Draft202012Validator
    from referencing.exceptions import Unresolvable

    questions = {q["interrupt_id"]: q for q in questions}
    if (answer is NO_ANSWER) == (answers is None):
        raise InvalidInput("give exactly one of answer, answers")
    if answers is None:
        if len(questions) != 1:
            raise InvalidInput(f"{len(questions)} questions wait: answer them by interrupt id with `answers`",
                               details=[{"path": "answers", "code": "required", "message": "answers are required"}])
        answers, where = {next(iter(questions)): answer}, {next(iter(questions)): "answer"}
    else:
        where = {interrupt_id: f"answers.{interrupt_id}" for interrupt_id in answers}
    errors = [{"path": where[interrupt_id], "code": "unknown_interrupt", "message": "no question waits with this id"}
              for interrupt_id in answers if interrupt_id not in questions]
    for interrupt_id, value in answers.items():
        schema = questions.get(interrupt_id, {}).get("schema")
        if schema is None:
            continue
        try:
            errors += [{"path": where[interrupt_id] + "".join(f".{p}" for p in error.absolute_path),
                        "code": "invalid_answer", "message": error.message}
                       for error in schema_validator(schema, draft=Draft202012Validator).iter_errors(value)]
        except Unresolvable as exc:  # a graph saved before outside refs were refused, or a pointer to nowhere
            errors.append({"path": where[interrupt_id], "code": "bad_schema",
                           "message": f"the question's schema has a $ref that cannot be resolved ({exc.ref}): "
                                      "no answer can be checked against it"})
    if errors:
        raise InvalidInput(f"the answer is not valid: {errors[0]['path']}: {errors[0]['message']}", details=errors)
    return answers


def _claim(*, execution: WorkflowExecution, answers: dict, mode: str, actor) -> WorkflowExecution:
    """Back to `running` for this answer (one answer wins a race; the other gets a 409). In background mode, back to
    `pending` with the answers written on the run, due now: no process runs it until a worker claims it (runs.
    _pending_claim goes on with them), and the recovery sweep treats it as any queued run (its task lost: queued
    again), so the answer lives as long as the run."""
    now = timezone.now()
    if mode == Mode.BACKGROUND:
        changes = {"status": Status.PENDING, "run_after": now,
                   "output_data": {**(execution.output_data or {}), "answers": answers}}
    else:
        changes = {"status": Status.RUNNING, "started_at": now, "heartbeat_at": now}
    with transaction.atomic():
        claimed = WorkflowExecution.objects.filter(pk=execution.pk, status=Status.WAITING).update(
            waiting_until=None, **changes)
        if not claimed:
            raise Conflict("the run is no longer waiting for input", code="not_waiting")
        audit_record(action="execution.resumed", actor=actor, target=execution,
                     correlation_id=execution.correlation_id, data={"answered": sorted(answers), "mode": mode})
    return WorkflowExecution.objects.select_related("template", "owner").get(pk=execution.pk)


def execution_resume(*, execution: WorkflowExecution, actor, answer: Any = NO_ANSWER, answers: dict | None = None,
                     mode: str = Mode.SYNC) -> WorkflowExecution | AsyncIterator[dict]:
    """Answer a waiting run and go on with it: sync (here, to its end or next question: returns the run), stream
    (on the runner's threads: returns its feed) or background (a worker: returns the claimed run). A bad answer
    raises InvalidInput and writes nothing."""
    answers = answers_check(execution=execution, answer=answer, answers=answers)
    if mode not in (Mode.SYNC, Mode.STREAM, Mode.BACKGROUND):
        raise InvalidInput(f"unknown mode {mode!r}")
    if mode == Mode.STREAM:
        subscription = execution_subscribe(execution.pk, remote=False)
        try:
            claimed = _claim(execution=execution, answers=answers, mode=mode, actor=actor)
        except BaseException:
            subscription.close()
            raise
        after = claimed.events.count()
        runner.submit(runner.RunStart(execution=claimed, resume=answers))
        return feed_until_paused(execution_feed(claimed.pk, after=after, subscription=subscription))
    claimed = _claim(execution=execution, answers=answers, mode=mode, actor=actor)
    if mode == Mode.BACKGROUND:  # the task a queued run gets: whichever worker claims it goes on with the answers
        transaction.on_commit(lambda: execution_enqueue(execution_id=claimed.pk))
        return claimed
    return runner.run(runner.RunStart(execution=claimed, resume=answers))


def executions_waiting_expire(*, now=None) -> list[WorkflowExecution]:
    """Waiting runs whose question went unanswered past its `timeout_s` end as its `on_timeout` says: `fail`
    (failed / input_timeout) or `cancel` (cancelled). Called by the recovery sweep."""
    now = now or timezone.now()
    ended = []
    for execution in WorkflowExecution.objects.filter(status=Status.WAITING, waiting_until__lte=now).only(
            "id", "output_data", "waiting_until"):
        questions = (execution.output_data or {}).get("input_required") or []
        first = min((q for q in questions if q.get("timeout_s")), key=lambda q: q["timeout_s"], default={})
        message = f"no answer came within {first.get('timeout_s')} s"
        error = RunCancelled(message) if first.get("on_timeout") == "cancel" else RunError(
            message, error_type="input_timeout")
        done = end_from_ledger(execution_id=execution.pk, error=error, from_statuses=(Status.WAITING,))
        if done is not None:
            ended.append(done)
    return ended
