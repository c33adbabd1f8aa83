"""Writes of experiments. Every target × item is an ordinary run through the one run path
(workflows.services.runs.execution_run_now), so its tokens and cost are accounted as any run's; an LLM judge's
verdict is a run of its own, tagged as the experiment's judge run. A result is written once, whole (its runs'
figures, its scores, its tags), when its run and its evaluators are done: a stop, a cancel or a crash leaves no
half-written item, and a resume runs only the target × item pairs that have no result yet."""
from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from decimal import Decimal
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.tasks import async_task

from audit.services import audit_record
from core.errors import ChatterError, Conflict, InvalidInput, TooManyRuns, Unavailable
from core.money import dollars, usd
from datasets.models import Dataset
from experiments.evaluators import LLM_JUDGE, as_text, judge_message, judge_verdict, rule_verdict
from experiments.models import Experiment, ExperimentResult, ExperimentRun
from experiments.progress import experiment_items, experiment_lost, experiment_progress
from experiments.selectors import experiment_results_from_runs
from scores.models import Score
from scores.services import score_create
from workflows.events import event_envelope, events_publish
from workflows.models import WorkflowDefinition, WorkflowExecution
from workflows.services.run_requests import ExperimentRequest
from workflows.services.runs import execution_run_now, run_plan

logger = logging.getLogger(__name__)
Status = Experiment.Status
JUDGE_INSTRUCTIONS = "You grade outputs. Answer only with a JSON object {\"score\": x}, x between 0 and 1."
# A run refused for its owner's concurrent-run limit (shared with their other runs) is asked again after a pause,
# which doubles up to BUSY_WAIT_MAX_S; a worker's task waits for a slot till its slice ends, BUSY_WAIT_MIN_S at least.
BUSY_WAIT_S = 0.25
BUSY_WAIT_MAX_S = 5.0
BUSY_WAIT_MIN_S = 10
OUTPUT_CHARS = 20_000
# A worker's task runs items for about this long, then hands the rest to a new task: django-q2 ends a task at its
# timeout (a run's, plus a minute), and an experiment may take far longer than one run.
SLICE_S = 60


# --- what a target or a judge runs ---------------------------------------------------------------------------
def model_graph(node_config: dict) -> dict:
    return {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model", "config": node_config},
                      {"id": "end", "type": "end"}],
            "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}


def target_request(target: dict) -> dict:
    """What an ExperimentRequest of a target has (without the item's input)."""
    request: dict = {"config": target.get("config") or None}
    if "template" in target:
        request["template"] = target["template"]
    elif "definition" in target:
        request["definition_id"] = target["definition"]
    else:  # a stored prompt's version or label, as the one model call of a run
        request["graph"] = model_graph({"prompt": target["prompt"]})
    return request


def item_request(item_input) -> dict:
    """An item's input as a run's: `{"message", "variables"}` (a run's own input) as it is; text as the message;
    any other object as the variables, and as JSON the message."""
    if isinstance(item_input, dict) and ("message" in item_input or "variables" in item_input):
        return {"message": item_input.get("message") or "", "variables": item_input.get("variables") or {}}
    if isinstance(item_input, str):
        return {"message": item_input, "variables": {}}
    return {"message": as_text(item_input), "variables": item_input if isinstance(item_input, dict) else {}}


def judge_request(spec: dict, *, item: dict, output: str) -> dict:
    node = {"prompt": spec["prompt"]} if spec.get("prompt") else {
        "system_message": spec.get("instructions") or JUDGE_INSTRUCTIONS}
    config = {key: spec[key] for key in ("provider", "model") if spec.get(key)}
    return {"graph": model_graph(node), "config": config or None,
            "message": judge_message(input=item["input"], expected_output=item["expected_output"], output=output),
            # a stored judge prompt may place them itself: {{input}}, {{expected_output}}, {{output}}
            "variables": {"input": as_text(item["input"]), "expected_output": as_text(item["expected_output"]),
                          "output": output}}


def _checked(owner, request: dict, path: str) -> None:
    """Validate a target or a judge as run_plan would run it (reads only); its errors name where it is."""
    try:
        run_plan(ExperimentRequest(owner=owner, **{"message": "check", **request}))
    except ChatterError as exc:
        raise InvalidInput(f"{path}: {exc.message}", details=[{"path": path, "code": exc.code,
                                                                "message": exc.message}]) from None


# --- create, cancel, resume ----------------------------------------------------------------------------------
def experiment_create(*, owner, name: str, dataset_id, targets: list[dict], evaluators: list[dict],
                      concurrency: int = 1, budget: Decimal | None = None, description: str = "",
                      start: bool = True) -> Experiment:
    """Validate every target and judge (as their runs would be), then write the experiment and, unless
    `start=False`, queue it. Bad input raises before anything is written."""
    dataset = Dataset.objects.filter(pk=dataset_id, owner=owner).first()
    if dataset is None:
        raise InvalidInput("dataset not found", details={"dataset": ["no such dataset of yours"]})
    if not dataset.items.exists():
        raise InvalidInput("the dataset has no items", details={"dataset": ["no items"]})
    if concurrency > settings.CHATTER_MAX_CONCURRENT_RUNS:
        raise InvalidInput(f"concurrency is at most {settings.CHATTER_MAX_CONCURRENT_RUNS} (your concurrent runs)",
                           details={"concurrency": ["above CHATTER_MAX_CONCURRENT_RUNS"]})
    for index, target in enumerate(targets):
        _checked(owner, target_request(target), f"targets[{index}]")
        if "definition_version" in target:  # the definition is visible to the owner: _checked found it
            current = WorkflowDefinition.objects.filter(pk=target["definition"]).values_list("version", flat=True)[0]
            if current != target["definition_version"]:
                raise InvalidInput(f"targets[{index}]: the definition is at version {current}; only its current "
                                   "version runs", details=[{"path": f"targets[{index}].definition_version",
                                                             "code": "invalid", "message": f"now {current}"}])
    for index, spec in enumerate(evaluators):
        if spec["type"] == LLM_JUDGE:
            _checked(owner, judge_request(spec, item={"input": "", "expected_output": ""}, output=""),
                     f"evaluators[{index}]")
    with transaction.atomic():
        if Dataset.objects.select_for_update().filter(pk=dataset.pk).first() is None:  # deleted meanwhile
            raise InvalidInput("dataset not found", details={"dataset": ["no such dataset of yours"]})
        experiment = Experiment.objects.create(
            owner=owner, name=name, description=description, dataset=dataset, targets=targets,
            evaluators=evaluators, concurrency=concurrency, budget=budget)
        audit_record(action="experiment.created", actor=owner, target=experiment, data={
            "dataset": str(dataset.pk), "targets": [t["name"] for t in targets], "budget": usd(budget) or None})
        if start:
            transaction.on_commit(lambda: experiment_enqueue(experiment_id=experiment.pk))
    return experiment


def experiment_enqueue(*, experiment_id) -> None:
    """Hand a committed pending experiment to the django-q2 workers (as background runs are)."""
    Experiment.objects.filter(pk=experiment_id).update(queued_at=timezone.now())
    try:
        async_task("experiments.tasks.experiment_run_task", str(experiment_id),
                   task_name=f"experiment-{experiment_id}", group="experiments")
    except Exception as exc:  # noqa: BLE001 - whatever the broker raised, the experiment must not stay pending
        logger.exception("experiment %s could not be queued", experiment_id)
        Experiment.objects.filter(pk=experiment_id, status=Status.PENDING).update(
            status=Status.FAILED, stop_reason=f"could not be queued: {type(exc).__name__}", completed_at=timezone.now())
        raise Unavailable("the experiment could not be queued", code="queue_unavailable") from exc


def experiment_cancel(*, experiment: Experiment, actor=None) -> Experiment:
    """A pending experiment ends at once; a running one stops starting items (those under way finish, whole)."""
    ended_now = Experiment.objects.filter(pk=experiment.pk, status=Status.PENDING).update(
        status=Status.CANCELLED, stop_reason="cancelled before it started", completed_at=timezone.now())
    if not ended_now and not Experiment.objects.filter(pk=experiment.pk, status=Status.RUNNING).update(
            cancel_requested=True):
        experiment.refresh_from_db()
        raise Conflict(f"the experiment is already {experiment.status}", code="not_cancellable")
    audit_record(action="experiment.cancel_requested", actor=actor, target=experiment,
                 data={"status": experiment.status})
    experiment.refresh_from_db()
    return experiment


def experiment_resume(*, experiment: Experiment, budget: Decimal | None = None, actor=None,
                      enqueue: bool = True) -> Experiment:
    """Go on with a stopped experiment (cancelled, out of budget, failed), or a lost one (experiment_lost): only the
    pairs without a result run. `budget`: a new budget (the whole experiment's, spent so far included).
    `enqueue=False`: left pending for the caller to run (the command runs it in its own process)."""
    changes = {"status": Status.PENDING, "cancel_requested": False, "stop_reason": "", "completed_at": None,
               "queued_at": None}
    if budget is not None:
        changes["budget"] = budget
    resumable = Q(status__in=Experiment.STOPPED)
    if experiment_lost(experiment=experiment):
        resumable |= Q(status=Status.RUNNING, heartbeat_at=experiment.heartbeat_at)
    with transaction.atomic():
        # under its dataset's lock, as a delete of the dataset or of an item asks whether an experiment uses it
        Dataset.objects.select_for_update().filter(pk=experiment.dataset_id).first()
        if not Experiment.objects.filter(resumable, pk=experiment.pk).update(**changes):
            experiment.refresh_from_db()
            raise Conflict(f"only a stopped (or lost) experiment resumes; this one is {experiment.status}",
                           code="not_resumable")
        audit_record(action="experiment.resumed", actor=actor, target=experiment, data={"budget": usd(budget) or None})
        if enqueue:
            transaction.on_commit(lambda: experiment_enqueue(experiment_id=experiment.pk))
    experiment.refresh_from_db()
    return experiment


# --- running ---------------------------------------------------------------------------------------------------
def experiment_run(*, experiment_id, on_result: Callable[[ExperimentResult], None] | None = None,
                   slice_s: float | None = None) -> Experiment:
    """Run a pending experiment (a worker's task, or the command). Safe to call twice: one caller claims it. At
    most `concurrency` items at once; before each item starts, a cancel or a spent budget stops it. `slice_s`: start
    items for that long, then leave it pending for a new task (queued here), which goes on with the rest."""
    now = timezone.now()
    claimed = Experiment.objects.filter(pk=experiment_id, status=Status.PENDING).update(
        status=Status.RUNNING, started_at=Coalesce("started_at", Value(now)), heartbeat_at=now)
    experiment = Experiment.objects.select_related("owner", "dataset").get(pk=experiment_id)
    if not claimed:
        return experiment
    deadline = None if slice_s is None else time.monotonic() + slice_s
    try:
        status, reason = _units_run(experiment, on_result, deadline)
    except Exception as exc:  # noqa: BLE001 - the experiment ends, saying why; its written results stay
        logger.exception("experiment %s failed", experiment_id)
        status, reason = Status.FAILED, f"{type(exc).__name__}: {exc}"
    with transaction.atomic():
        if status == Status.PENDING:  # the slice is over: the rest in a new task (a cancel meanwhile ends it there)
            if Experiment.objects.filter(pk=experiment_id, status=Status.RUNNING).update(status=Status.PENDING):
                transaction.on_commit(lambda: experiment_enqueue(experiment_id=experiment_id))
        else:
            Experiment.objects.filter(pk=experiment_id).update(status=status, stop_reason=reason,
                                                               completed_at=timezone.now(), cancel_requested=False)
        try:
            experiment.refresh_from_db()
        except Experiment.DoesNotExist:  # deleted while it ran (the admin can): no one is left to tell
            logger.warning("experiment %s was deleted while it ran: %s", experiment_id, reason or status)
            return experiment
        if status != Status.PENDING:
            _progress_on_commit(experiment)
    return experiment


def _units_run(experiment: Experiment, on_result, deadline: float | None) -> tuple[str, str]:
    """Run the pairs without a result, over the experiment's items (experiment_items), until none is left or it
    stops. Read again once those are done: an item added just before it started may be committed after the read."""
    first = True
    while True:
        done = set(experiment.results.values_list("target", "item_id"))
        items = experiment_items(experiment=experiment).order_by("created_at", "id").values(
            "id", "input", "expected_output")
        units = [(target, item) for item in items for target in experiment.targets
                 if (target["name"], item["id"]) not in done]
        if not units:
            return Status.COMPLETED, ""
        stop = _pairs_run(experiment, units, on_result, deadline, first=first)
        if stop:
            return stop
        first = False


def _pairs_run(experiment: Experiment, units: list, on_result, deadline: float | None, *,
               first: bool) -> tuple[str, str] | None:
    """Run these pairs, `concurrency` at once; why it stopped before their end, or None. A slice starts one pair at
    least (`first`: the deadline is not asked before it)."""
    if experiment.concurrency == 1:  # here, in this thread
        for started, (target, item) in enumerate(units):
            stop = _stop_reason(experiment, deadline if started or not first else None)
            if stop:
                return stop
            if not _unit_run(experiment, target, item, on_result, deadline):
                return _slotless_stop(experiment)
        return None
    stop, slotless = None, False
    with ThreadPoolExecutor(max_workers=experiment.concurrency, thread_name_prefix="experiment") as pool:
        under_way: set = set()
        for started, (target, item) in enumerate(units):
            while len(under_way) >= experiment.concurrency:
                finished, under_way = wait(under_way, return_when=FIRST_COMPLETED)
                slotless |= not all([future.result() for future in finished])
            stop = _stop_reason(experiment, deadline if started or not first else None) or (
                _slotless_stop(experiment) if slotless else None)
            if stop:
                break
            under_way.add(pool.submit(_in_own_thread, _unit_run, experiment, target, item, on_result, deadline))
        slotless |= not all([future.result() for future in wait(under_way).done])
    return stop or (_slotless_stop(experiment) if slotless else None)


def _slotless_stop(experiment: Experiment) -> tuple[str, str]:
    """A pair got no run slot in its wait (NoSlot): stopped meanwhile, or the rest in a new task (PENDING)."""
    return _stop_reason(experiment, None) or (Status.PENDING, "")


def _in_own_thread(function, *args):
    try:
        return function(*args)
    finally:
        connection.close()  # the pool thread's own connection


def experiment_spent(*, experiment_id) -> Decimal:
    """What the experiment's runs (targets and judges) cost so far: the sum of its runs."""
    return sum(ExperimentRun.objects.filter(experiment_id=experiment_id).values_list("execution__cost", flat=True),
               Decimal("0"))  # in Decimal: SQLite would sum money as floats


def _stop_reason(experiment: Experiment, deadline: float | None) -> tuple[str, str] | None:
    """Why no more item starts now (a cancel, a spent budget, the end of the task's slice: PENDING), or None."""
    cancel_requested = Experiment.objects.filter(pk=experiment.pk).values_list("cancel_requested", flat=True).first()
    if cancel_requested is None:  # deleted while it ran: nothing more runs for it
        return Status.FAILED, "the experiment was deleted"
    if cancel_requested:
        return Status.CANCELLED, "cancelled"
    if experiment.budget is not None:
        spent = experiment_spent(experiment_id=experiment.pk)
        if spent >= experiment.budget:
            return Status.BUDGET_SPENT, f"budget of {dollars(experiment.budget)} spent ({dollars(spent)})"
    if deadline is not None and time.monotonic() >= deadline:
        return Status.PENDING, ""
    return None


class NoSlot(Exception):
    """The owner's concurrent-run limit left a pair's run no slot while it could wait, or the experiment stopped
    meanwhile: the pair has no result (a refusal for capacity is none), and runs later, whole."""


def _run(experiment: Experiment, request: dict, *, until: float | None) -> WorkflowExecution:
    """One ordinary sync run. While the owner is at their concurrent-run limit, ask again after a pause (doubling)
    until `until` (time.monotonic(); None: as long as it takes); NoSlot then, or once the experiment is no longer
    running or is cancelled. Waiting, it keeps its heartbeat: its worker is alive."""
    pause = BUSY_WAIT_S
    while True:
        try:
            return execution_run_now(ExperimentRequest(owner=experiment.owner, **request))
        except TooManyRuns:
            if (until is not None and time.monotonic() >= until) or not Experiment.objects.filter(
                    pk=experiment.pk, status=Status.RUNNING, cancel_requested=False).update(
                    heartbeat_at=timezone.now()):
                raise NoSlot from None
            time.sleep(pause)
            pause = min(2 * pause, BUSY_WAIT_MAX_S)


def _kept_runs(experiment: Experiment, target: dict, item: dict) -> tuple[WorkflowExecution | None, dict]:
    """The pair's runs kept when a judge of it got no run slot (_runs_keep): its target's run (None: none kept)
    and its judges' by evaluator."""
    kept, judges = None, {}
    for run in ExperimentRun.objects.filter(experiment=experiment, result__isnull=True, target=target["name"],
                                            item_id=item["id"]).select_related("execution"):
        if run.role == ExperimentRun.Role.TARGET:
            kept = run.execution
        else:
            judges[run.evaluator] = run.execution
    return kept, judges


def _runs_keep(experiment: Experiment, target: dict, item: dict, execution: WorkflowExecution, judges: list) -> None:
    """A judge of the pair got no run slot: its target's run and the judges' so far are kept as the experiment's,
    under the pair, so that the pair's next attempt asks only the judges left (no run made, nor paid, twice)."""
    runs = [(execution, ExperimentRun.Role.TARGET, ""), *((judge, ExperimentRun.Role.JUDGE, name)
                                                         for name, judge in judges)]
    known = set(ExperimentRun.objects.filter(execution__in=[run for run, _, _ in runs]).values_list(
        "execution_id", flat=True))
    ExperimentRun.objects.bulk_create([
        ExperimentRun(experiment=experiment, execution=run, role=role, evaluator=name, target=target["name"],
                      item_id=item["id"]) for run, role, name in runs if run.pk not in known])


def _unit_run(experiment: Experiment, target: dict, item: dict, on_result, deadline: float | None) -> bool:
    """Run a pair and write its result; False when it got no run slot (NoSlot), no result written. A worker's task
    waits for each of its runs' slots till its slice ends (BUSY_WAIT_MIN_S at least); the command, as long as it
    takes. A judge that gets none leaves the pair's runs made so far kept (_runs_keep): the pair's next attempt goes
    on from them, asking only the judges left."""
    def until() -> float | None:
        return None if deadline is None else max(deadline, time.monotonic() + BUSY_WAIT_MIN_S)

    execution, kept_judges = _kept_runs(experiment, target, item)
    try:
        execution = execution or _run(experiment, {**target_request(target), **item_request(item["input"])},
                                      until=until())
    except NoSlot:
        return False
    except ChatterError as exc:  # refused before it was written: nothing ran, nothing was spent
        _result_write(experiment, target, item, execution=None, judges=[], scores={}, errors={},
                      error=exc.message, on_result=on_result)
        return True
    output = as_text(execution.output_data)[:OUTPUT_CHARS]
    scores, errors, judges = {}, {}, []
    if execution.status == WorkflowExecution.Status.COMPLETED:
        for spec in experiment.evaluators:
            name = spec["name"]
            if spec["type"] != LLM_JUDGE:
                try:
                    scores[name] = (rule_verdict(spec, output=output, expected=item["expected_output"]), "")
                except ValueError as exc:
                    errors[name] = str(exc)
                continue
            try:
                judge = kept_judges.get(name) or _run(experiment, judge_request(spec, item=item, output=output),
                                                      until=until())
            except NoSlot:
                _runs_keep(experiment, target, item, execution, judges)
                return False
            except ChatterError as exc:
                errors[name] = exc.message
                continue
            judges.append((name, judge))
            verdict = as_text(judge.output_data)
            if judge.status != WorkflowExecution.Status.COMPLETED:
                errors[name] = judge.error_message or judge.status
                continue
            try:
                scores[name] = (judge_verdict(verdict), verdict[:1000])
            except ValueError as exc:
                errors[name] = str(exc)
    _result_write(experiment, target, item, execution=execution, judges=judges, scores=scores, errors=errors,
                  error="" if execution.status == WorkflowExecution.Status.COMPLETED else (
                      execution.error_message or execution.status), on_result=on_result)
    return True


def _result_write(experiment: Experiment, target: dict, item: dict, *, execution: WorkflowExecution | None,
                  judges: list, scores: dict, errors: dict, error: str, on_result) -> None:
    """The item's result, its runs' tags and its scores, in one transaction."""
    completed = execution is not None and execution.status == WorkflowExecution.Status.COMPLETED
    judge_runs = [judge for _, judge in judges]
    try:
        with transaction.atomic():
            result = ExperimentResult.objects.create(
                experiment=experiment, target=target["name"], item_id=item["id"], execution=execution,
                status=ExperimentResult.Status.COMPLETED if completed else ExperimentResult.Status.FAILED,
                error=error[:5000], output=as_text(execution.output_data)[:OUTPUT_CHARS] if execution else None,
                scores={name: value for name, (value, _) in scores.items()}, evaluator_errors=errors,
                prompt_tokens=execution.prompt_tokens if execution else 0,
                completion_tokens=execution.completion_tokens if execution else 0,
                total_tokens=execution.total_tokens if execution else 0,
                cost=execution.cost if execution else Decimal("0"),
                latency_ms=execution.execution_time_ms if execution else None,
                judge_prompt_tokens=sum(j.prompt_tokens for j in judge_runs),
                judge_completion_tokens=sum(j.completion_tokens for j in judge_runs),
                judge_total_tokens=sum(j.total_tokens for j in judge_runs),
                judge_cost=sum((j.cost for j in judge_runs), Decimal("0")))
            # the pair's runs kept while a judge waited for a slot (_runs_keep) are written again with their result
            ExperimentRun.objects.filter(experiment=experiment, result__isnull=True, target=target["name"],
                                         item_id=item["id"]).delete()
            ExperimentRun.objects.bulk_create(
                ([ExperimentRun(experiment=experiment, result=result, execution=execution,
                                role=ExperimentRun.Role.TARGET)] if execution else [])
                + [ExperimentRun(experiment=experiment, result=result, execution=judge, evaluator=name,
                                 role=ExperimentRun.Role.JUDGE) for name, judge in judges])
            for name, (value, comment) in scores.items():
                score_create(owner=experiment.owner, name=name, value=value, comment=comment,
                             data_type=Score.DataType.BOOLEAN if isinstance(value, bool) else Score.DataType.NUMERIC,
                             source=Score.Source.EVALUATOR, execution_id=execution.pk)
            Experiment.objects.filter(pk=experiment.pk).update(heartbeat_at=timezone.now())
            _progress_on_commit(experiment, execution_id=execution.pk if execution else None)
    except IntegrityError as exc:
        if not ExperimentResult.objects.filter(experiment_id=experiment.pk, target=target["name"],
                                               item_id=item["id"]).exists():
            # not the one result per pair: the experiment or the item is gone, or a value a column refuses; the
            # experiment ends, failed, saying so (experiment_run)
            raise IntegrityError(f"the result of {target['name']} × item {item['id']} could not be written "
                                 f"({exc})") from exc
        # another worker wrote this pair first (the unique constraint): its runs stay ordinary
        logger.warning("experiment %s: %s × %s already has a result", experiment.pk, target["name"], item["id"])
        return
    if on_result is not None:
        on_result(result)


def experiment_results_fix() -> int:
    """Each result's figures again from its runs (after re-pricing, say): how many rows changed."""
    fixed = 0
    for pk, row in experiment_results_from_runs().items():
        if any(row["stored"][name] != value for name, value in row["actual"].items()):
            fixed += ExperimentResult.objects.filter(pk=pk).update(**row["actual"])
    return fixed


def _progress_on_commit(experiment: Experiment, *, execution_id=None) -> None:
    """`experiment_updated` on the owner's feed (/ws/events/), through the one event path, once this commits:
    after each item, and at the end. Not persisted (it is no run's event)."""
    def publish() -> None:
        envelope = event_envelope(execution_id=execution_id or "", event="experiment_updated", seq=None,
                                  data=experiment_progress(experiment=experiment))
        events_publish([], owner_id=experiment.owner_id, owner_only=(envelope,))

    transaction.on_commit(publish)
