"""Budget spend recomputed from the runs (reconcile_aggregates): every budget period's spent equals the sums over
the ended runs that held it, and its reserved the sums of what runs still in progress hold (each run keeps its
holds: WorkflowExecution.budget_holds). Kept apart from analytics.services, which covers the other aggregates."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from budgets.models import BudgetPeriod
from workflows.models import WorkflowExecution

FIGURES = ("spent_usd", "spent_tokens", "reserved_usd", "reserved_tokens")


def _zero() -> dict:
    return {"spent_usd": Decimal("0"), "spent_tokens": 0, "reserved_usd": Decimal("0"), "reserved_tokens": 0}


def budget_spend_from_runs(*, period_keys: set | None = None) -> dict:
    """(budget id, period start) → the figures its row should hold, from the runs' holds."""
    actual: dict = {}
    runs = WorkflowExecution.objects.exclude(budget_holds=[]).values_list(
        "status", "total_tokens", "cost", "budget_holds")
    for status, tokens, cost, holds in runs:
        for hold in holds or []:
            key = (str(hold["budget"]), datetime.fromisoformat(hold["starts_at"]))
            if period_keys is not None and key not in period_keys:
                continue
            row = actual.setdefault(key, _zero())
            if status in WorkflowExecution.TERMINAL:
                row["spent_usd"] += cost
                row["spent_tokens"] += tokens
            else:
                row["reserved_usd"] += Decimal(hold["usd"])
                row["reserved_tokens"] += hold["tokens"]
    return actual


def budget_spend_drift() -> list[dict]:
    """Budget periods whose stored figures differ from the runs' (a missing row and zeros are the same)."""
    stored = {(str(row["budget_id"]), row["starts_at"]): {name: row[name] for name in FIGURES}
              for row in BudgetPeriod.objects.values("budget_id", "starts_at", *FIGURES)}
    actual = budget_spend_from_runs()
    drift = []
    for key in sorted(set(stored) | set(actual), key=str):
        have, want = stored.get(key, _zero()), actual.get(key, _zero())
        fields = {name: (have[name], want[name]) for name in FIGURES if have[name] != want[name]}
        if fields:
            drift.append({"kind": "budget_period", "id": f"{key[0]}@{key[1].isoformat()}", "fields": fields})
    return drift


def budget_spend_fix() -> int:
    """Set each drifted period to the runs' figures, under its row lock (runs ending meanwhile wait for it, then
    apply their own change on top)."""
    fixed = 0
    for row in budget_spend_drift():
        budget_id, starts_at = row["id"].split("@")
        with transaction.atomic():
            period = BudgetPeriod.objects.select_for_update().filter(
                budget_id=budget_id, starts_at=datetime.fromisoformat(starts_at)).first()
            if period is None:
                continue
            key = (str(period.budget_id), period.starts_at)
            figures = budget_spend_from_runs(period_keys={key}).get(key, _zero())
            BudgetPeriod.objects.filter(pk=period.pk).update(**figures)
            fixed += 1
    return fixed
