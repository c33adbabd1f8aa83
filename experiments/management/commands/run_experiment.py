"""manage.py run_experiment: run an experiment in this process, through the same services as the API.

  run_experiment --file spec.json [--user U]   create one (the body POST /api/v1/experiments/ takes) and run it
  run_experiment ID [--budget USD]             run a pending one, or resume a stopped one
"""
from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.cli import cli_user
from core.errors import ChatterError
from core.money import dollars
from experiments.api.serializers import ExperimentResumeSerializer, ExperimentWriteSerializer
from experiments.models import Experiment
from experiments.progress import experiment_items
from experiments.selectors import experiment_list, experiment_summary
from experiments.services import experiment_create, experiment_lost, experiment_resume, experiment_run
from workflows.services.templates import is_uuid


class Command(BaseCommand):
    help = "Run an experiment here (create it from a JSON file, or run or resume one by id); prints each item and the totals."

    def add_arguments(self, parser) -> None:
        parser.add_argument("experiment", nargs="?", help="the id of a pending or stopped experiment")
        parser.add_argument("--file", help="a JSON file: name, dataset, targets, evaluators, concurrency, budget")
        parser.add_argument("--budget", help="resuming: a new budget (USD, the whole experiment's)")
        parser.add_argument("--user", help="username (default: the first superuser)")

    def handle(self, *args, **options) -> None:
        user = cli_user(options["user"])
        if bool(options["experiment"]) == bool(options["file"]):
            raise CommandError("give an experiment id or --file, one of them")
        try:
            experiment = self._created(user, options["file"]) if options["file"] else self._ready(
                user, options["experiment"], options["budget"])
            self.stdout.write(f"experiment {experiment.pk}: {len(experiment.targets)} target(s) × "
                              f"{experiment_items(experiment=experiment).count()} item(s)")
            experiment = experiment_run(experiment_id=experiment.pk, on_result=self._shown)
        except ChatterError as exc:
            raise CommandError(f"{exc.message} {exc.as_dict()['error']['details'] or ''}".strip()) from None
        self._totals(experiment)
        if experiment.status != Experiment.Status.COMPLETED:
            raise CommandError(f"{experiment.status}: {experiment.stop_reason}")

    def _created(self, user, path: str) -> Experiment:
        try:
            body = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"--file: {exc}") from None
        serializer = ExperimentWriteSerializer(data={**body, "start": False} if isinstance(body, dict) else body)
        if not serializer.is_valid():
            raise CommandError(f"--file: {json.dumps(serializer.errors)}")
        data = serializer.validated_data
        return experiment_create(owner=user, name=data["name"], description=data["description"],
                                 dataset_id=data["dataset"], targets=data["targets"], evaluators=data["evaluators"],
                                 concurrency=data["concurrency"], budget=data.get("budget"), start=False)

    def _ready(self, user, experiment_id: str, budget: str | None) -> Experiment:
        experiment = experiment_list(user=user).filter(pk=experiment_id).first() if is_uuid(experiment_id) else None
        if experiment is None:
            raise CommandError(f"no experiment {experiment_id} of {user.username}")
        resume = ExperimentResumeSerializer(data={} if budget is None else {"budget": budget})
        if not resume.is_valid():
            raise CommandError(f"--budget: {json.dumps(resume.errors)}")
        if experiment.status in Experiment.STOPPED or experiment_lost(experiment=experiment):
            experiment = experiment_resume(experiment=experiment, budget=resume.validated_data.get("budget"),
                                           actor=user, enqueue=False)
        elif experiment.status != Experiment.Status.PENDING:
            raise CommandError(f"the experiment is {experiment.status}")
        return experiment

    def _shown(self, result) -> None:
        scores = " ".join(f"{name}={value}" for name, value in result.scores.items())
        self.stdout.write(f"  {result.target} · item {result.item_id}: {result.status} · {result.total_tokens} tokens"
                          f" · {dollars(result.cost)} · judge {dollars(result.judge_cost)} · {result.latency_ms} ms {scores}")

    def _totals(self, experiment: Experiment) -> None:
        summary = experiment_summary(experiment=experiment)
        for name, total in [*summary["targets"].items(), ("total", summary["total"])]:
            means = " ".join(f"{score}={found['mean']:.3g}" for score, found in total["scores"].items())
            self.stdout.write(f"{name}: {total['items']} items ({total['failed']} failed) · {total['total_tokens']} "
                              f"tokens · {dollars(total['cost'])} · judge {total['judge_total_tokens']} tokens "
                              f"{dollars(total['judge_cost'])} {means}".rstrip())
        self.stdout.write(f"status: {experiment.status}" + (f" ({experiment.stop_reason})"
                                                             if experiment.stop_reason else ""))

