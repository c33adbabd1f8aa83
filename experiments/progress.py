"""How far an experiment has got, and what it waits for: the API's `progress`, the admin's, and the
`experiment_updated` event's data. An experiment that shows `pending` or `running` says why it has not moved on."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from datasets.models import DatasetItem
from experiments.evaluators import LLM_JUDGE
from experiments.models import Experiment

Status = Experiment.Status


def experiment_items(*, experiment: Experiment) -> QuerySet[DatasetItem]:
    """The items an experiment runs and counts: those its dataset had when it first started (before it starts, all
    of them now). Items added since are for a new experiment; a resume keeps the set."""
    items = DatasetItem.objects.filter(dataset_id=experiment.dataset_id)
    return items if experiment.started_at is None else items.filter(created_at__lte=experiment.started_at)


def experiment_lost(*, experiment: Experiment) -> bool:
    """A running experiment whose worker died: no result for longer than an item can take (its run and each judge's
    run to their timeout), plus a minute."""
    if experiment.status != Status.RUNNING or experiment.heartbeat_at is None:
        return False
    judges = sum(spec["type"] == LLM_JUDGE for spec in experiment.evaluators)
    longest = timedelta(seconds=(1 + judges) * settings.CHATTER_EXECUTION_TIMEOUT_S + 60)
    return experiment.heartbeat_at < timezone.now() - longest


def _ago(moment) -> str:
    seconds = max(0, int((timezone.now() - moment).total_seconds()))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"


def experiment_waiting_for(experiment: Experiment, *, done: int, total: int) -> str | None:
    """What a pending or running experiment waits for, in a sentence; None once it has ended."""
    judges = sum(spec["type"] == LLM_JUDGE for spec in experiment.evaluators)
    if experiment.status == Status.PENDING:
        if experiment.queued_at is None:
            return (f"a start: it was created with \"start\": false; run it with "
                    f"`manage.py run_experiment {experiment.pk}`")
        return (f"a background worker to {'go on with it' if experiment.started_at else 'pick it up'} (queued "
                f"{_ago(experiment.queued_at)} ago; `make run` runs a worker, or `manage.py qcluster`)")
    if experiment.status != Status.RUNNING:
        return None
    if experiment_lost(experiment=experiment):
        return (f"its worker, which has written nothing for {_ago(experiment.heartbeat_at)}: it stopped; "
                "POST …/resume/ goes on with the rest")
    under_way = min(experiment.concurrency, total - done)
    if under_way <= 0:
        return "its end (every target × item pair has its result)"
    each = f"each a target's run then {judges} judge run{'s' if judges != 1 else ''}" if judges else "a run each"
    if experiment.cancel_requested:
        return f"the {under_way} target × item pair(s) under way to finish ({each}): then it stops, cancelled"
    pairs = f"pair {done + 1}" if under_way == 1 else f"pairs {done + 1} to {done + under_way}"
    return f"the runs of target × item {pairs} of {total} ({each})"


def _progress(experiment: Experiment, *, done: int, failed: int, items: int) -> dict:
    total = items * len(experiment.targets)
    return {"experiment_id": str(experiment.pk), "status": experiment.status, "stop_reason": experiment.stop_reason,
            "done": done, "failed": failed, "total": total,
            "waiting_for": experiment_waiting_for(experiment, done=done, total=total)}


def experiment_progress(*, experiment: Experiment) -> dict:
    """Results written (done, of which failed) of all target × item pairs (total), and what it waits for."""
    counts = experiment.results.aggregate(done=Count("id"), failed=Count("id", filter=Q(status="failed")))
    return _progress(experiment, **counts, items=experiment_items(experiment=experiment).count())


def with_progress_counts(experiments: QuerySet[Experiment]) -> QuerySet[Experiment]:
    """Experiments with what progress_counted reads, in the one query that lists them."""
    return experiments.annotate(
        progress_done=Count("results", distinct=True),
        progress_failed=Count("results", filter=Q(results__status="failed"), distinct=True),
        progress_items=Count("dataset__items", distinct=True, filter=Q(started_at__isnull=True) | Q(
            dataset__items__created_at__lte=F("started_at"))))  # experiment_items


def progress_counted(experiment: Experiment) -> dict:
    """experiment_progress of an experiment read through with_progress_counts, without a query of its own."""
    return _progress(experiment, done=experiment.progress_done, failed=experiment.progress_failed,
                     items=experiment.progress_items)
