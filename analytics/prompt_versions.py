"""Per-version insight into a stored prompt: the runs each version was given — a split's variants side by
side — with their totals (exact sums of the runs' own figures), latency percentiles, error rate and mean scores,
and for each mean a 95% confidence interval of its difference from a baseline version (Welch), so an operator can
tell noise from a real difference."""
from __future__ import annotations

import math
from collections import defaultdict

from django.db.models import Count, Q, Sum

from core.money import usd
from prompts.models import DEFAULT_LABEL, Prompt
from scores.models import Score
from workflows.models import WorkflowExecution

SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "llm_calls")
Z95 = 1.959963984540054


def prompt_version_report(*, prompt: Prompt, baseline: int | None = None) -> dict:
    """The prompt's versions that ran (finished runs only), each with its figures; `baseline` (a version number)
    defaults to what `production` points at when it ran, else the version with the most runs."""
    finished = WorkflowExecution.objects.filter(owner_id=prompt.owner_id, prompt_version__prompt=prompt,
                                                status__in=WorkflowExecution.TERMINAL)
    totals = {row["prompt_version__version"]: row for row in finished.values("prompt_version__version").annotate(
        runs=Count("id"), failed=Count("id", filter=Q(status=WorkflowExecution.Status.FAILED)),
        cancelled=Count("id", filter=Q(status=WorkflowExecution.Status.CANCELLED)),
        **{name: Sum(name) for name in SUMS})}
    samples: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for number, status, latency, tokens, cost in finished.values_list(
            "prompt_version__version", "status", "execution_time_ms", "total_tokens", "cost").iterator():
        sample = samples[number]
        sample["error_rate"].append(1.0 if status == WorkflowExecution.Status.FAILED else 0.0)
        sample["total_tokens"].append(float(tokens))
        sample["cost"].append(float(cost))
        if latency is not None:
            sample["latency_ms"].append(float(latency))
    categories: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for number, name, data_type, value, category in Score.objects.filter(execution__in=finished).values_list(
            "execution__prompt_version__version", "name", "data_type", "value", "category").iterator():
        if data_type == Score.DataType.CATEGORICAL:
            categories[number][name][category] += 1
        else:
            samples[number][f"score:{name}"].append(value)
    labels = list(prompt.labels.select_related("version").order_by("name"))
    baseline = _baseline(baseline, labels, totals)
    versions = []
    for number in sorted(totals):
        row, sample = totals[number], samples[number]
        means = {name: _summary(values) for name, values in sample.items()}
        versions.append({
            "version": number,
            "labels": [_label_share(label, number) for label in labels if _label_share(label, number)],
            "runs": row["runs"], "failed": row["failed"], "cancelled": row["cancelled"],
            **{name: row[name] or 0 for name in SUMS if name != "cost"},
            "cost": usd(row["cost"] or 0),
            "latency_ms": {"p50": _percentile(sample["latency_ms"], 50), "p95": _percentile(sample["latency_ms"], 95)},
            "means": {name: summary for name, summary in means.items() if not name.startswith("score:")},
            "scores": {**{name[6:]: summary for name, summary in means.items() if name.startswith("score:")},
                       **{name: {"categories": dict(counts)} for name, counts in categories[number].items()}},
            "vs_baseline": None if number == baseline or baseline is None else {
                **{name: _difference(values, samples[baseline].get(name, []))
                   for name, values in sample.items() if not name.startswith("score:")},
                "scores": {name[6:]: _difference(values, samples[baseline].get(name, []))
                           for name, values in sample.items() if name.startswith("score:")}},
        })
    return {"prompt": prompt.name, "baseline": baseline,
            "labels": [{"name": label.name, "version": label.version.version if label.version_id else None,
                        "split": label.split} for label in labels],
            "versions": versions}


def _baseline(asked: int | None, labels: list, totals: dict) -> int | None:
    if asked is not None:
        return asked if asked in totals else None
    production = next((label for label in labels if label.name == DEFAULT_LABEL and label.version_id), None)
    if production is not None and production.version.version in totals:
        return production.version.version
    return max(totals, key=lambda number: (totals[number]["runs"], -number), default=None)


def _label_share(label, number: int) -> str:
    if label.split:
        weight = label.split.get(str(number))
        return f"{label.name} ({weight}/{sum(label.split.values())})" if weight is not None else ""
    return label.name if label.version_id and label.version.version == number else ""


def _summary(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n if n else None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd}


def _percentile(values: list[float], percent: int) -> float | None:
    """Nearest rank: a latency some run actually had."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def _difference(values: list[float], baseline: list[float]) -> dict:
    """This mean minus the baseline's, with Welch's 95% interval (Student's t at Welch–Satterthwaite's degrees of
    freedom); null where either side has fewer than 2 values."""
    a, b = _summary(values), _summary(baseline)
    if a["n"] < 2 or b["n"] < 2:
        return {"difference": None if a["mean"] is None or b["mean"] is None else a["mean"] - b["mean"],
                "ci95": None}
    difference = a["mean"] - b["mean"]
    va, vb = a["sd"] ** 2 / a["n"], b["sd"] ** 2 / b["n"]
    se = math.sqrt(va + vb)
    if se == 0:
        return {"difference": difference, "ci95": [difference, difference]}
    df = (va + vb) ** 2 / ((va ** 2 / (a["n"] - 1)) + (vb ** 2 / (b["n"] - 1)))
    margin = _t95(df) * se
    return {"difference": difference, "ci95": [difference - margin, difference + margin]}


def _t95(df: float) -> float:
    """Student's t two-sided 95% quantile: exact for df < 3 (at the whole df below: a little wide, never narrow), a
    Cornish–Fisher expansion around the normal's above (within 1% at df = 3, exact to 3 decimals from df = 5)."""
    if df < 2:
        return math.tan(math.pi * 0.475)  # df = 1 (Cauchy)
    if df < 3:
        return math.sqrt(2) * 0.95 / math.sqrt(4 * 0.975 * 0.025)  # df = 2
    z = Z95
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
