"""Reads of experiments: yours (another user's is not found), their totals per target, and several side by side."""
from __future__ import annotations

from decimal import Decimal
from statistics import mean

from django.db.models import QuerySet

from core.money import usd
from experiments.models import Experiment, ExperimentResult, ExperimentRun
from experiments.progress import experiment_progress

FIGURES = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "judge_prompt_tokens",
           "judge_completion_tokens", "judge_total_tokens", "judge_cost")


def experiment_list(*, user) -> QuerySet[Experiment]:
    return Experiment.objects.filter(owner=user).select_related("dataset")


def _means(results: list[ExperimentResult]) -> dict:
    """Each score's mean over the results that have it (a boolean counts 1 or 0), and how many had it."""
    values: dict[str, list[float]] = {}
    for result in results:
        for name, value in (result.scores or {}).items():
            values.setdefault(name, []).append(float(value))
    return {name: {"mean": mean(found), "n": len(found)} for name, found in sorted(values.items())}


def _summary(results: list[ExperimentResult]) -> dict:
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    figures = {field: sum((getattr(r, field) for r in results), Decimal("0") if "cost" in field else 0)
               for field in FIGURES}
    return {"items": len(results), "failed": sum(r.status == ExperimentResult.Status.FAILED for r in results),
            **{k: usd(v) if isinstance(v, Decimal) else v for k, v in figures.items()},
            "latency_ms_mean": mean(latencies) if latencies else None, "scores": _means(results)}


def experiment_summary(*, experiment: Experiment) -> dict:
    """Per target and in total: items done and failed, the targets' tokens and cost, the judges' apart, mean
    latency, mean scores. The figures are the sums of the results (each its runs')."""
    results = list(experiment.results.all())
    by_target = {t["name"]: [r for r in results if r.target == t["name"]] for t in experiment.targets}
    return {"targets": {name: _summary(rows) for name, rows in by_target.items()}, "total": _summary(results)}


def experiment_totals_from_runs(*, experiment: Experiment) -> dict:
    """The same totals read from the runs themselves (targets and judges apart), summed exactly (SQLite would sum
    money as floats)."""
    totals = {role: {"runs": 0, "failed": 0, "total_tokens": 0, "cost": Decimal("0")} for role in ("target", "judge")}
    for role, status, tokens, cost in experiment.runs.values_list(
            "role", "execution__status", "execution__total_tokens", "execution__cost").iterator():
        total = totals[role]
        total["runs"] += 1
        total["failed"] += status != "completed"
        total["total_tokens"] += tokens
        total["cost"] += cost
    return {role: {**total, "cost": usd(total["cost"])} for role, total in totals.items()}


def experiments_compare(*, experiments: list[Experiment]) -> dict:
    """Experiments side by side: columns (experiment × target), their totals, and per item each column's output,
    scores, tokens, cost and latency. Items are matched by dataset item."""
    columns, totals, by_item, items = [], [], {}, {}
    for experiment in experiments:
        summary = experiment_summary(experiment=experiment)
        progress = experiment_progress(experiment=experiment)
        for target in experiment.targets:
            columns.append({"experiment": experiment, "target": target["name"], "progress": progress})
            totals.append(summary["targets"][target["name"]])
        for result in experiment.results.select_related("item"):
            items.setdefault(result.item_id, result.item)
            by_item[(result.item_id, experiment.pk, result.target)] = result
    rows = [{"item": item, "cells": [by_item.get((item_id, c["experiment"].pk, c["target"])) for c in columns]}
            for item_id, item in sorted(items.items(), key=lambda pair: (pair[1].created_at, str(pair[0])))]
    score_names = sorted({name for total in totals for name in total["scores"]})
    for total in totals:  # in score_names' order, for a table
        total["score_means"] = [(total["scores"].get(name) or {}).get("mean") for name in score_names]
    return {"columns": columns, "totals": totals, "rows": rows, "score_names": score_names}


RESULT_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost")


def experiment_results_from_runs() -> dict:
    """Each result's stored figures and the same from its runs: the target's run's, and the sums over its judge
    runs (the `judge_` ones), summed in Decimal."""
    zero = {**{name: 0 for name in RESULT_SUMS}, "cost": Decimal("0")}
    rows = {pk: {"stored": stored, "actual": {**zero, **{f"judge_{k}": v for k, v in zero.items()}}}
            for pk, *figures in ExperimentResult.objects.values_list("pk", *FIGURES).iterator()
            for stored in [dict(zip(FIGURES, figures))]}
    runs = ExperimentRun.objects.filter(result__isnull=False).values_list("result_id", "role", *(f"execution__{name}" for name in RESULT_SUMS))
    for result_id, role, *figures in runs.iterator():
        prefix = "judge_" if role == ExperimentRun.Role.JUDGE else ""
        actual = rows[result_id]["actual"]
        for name, value in zip(RESULT_SUMS, figures):
            actual[prefix + name] += value
    return rows
