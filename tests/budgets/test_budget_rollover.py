"""A period rolls over while runs are in flight: runs written before local midnight reserve in, and
settle on, the day they started in; runs written after it reserve in the new day's period, made by whichever
comes first. Both periods end exact (spent = the sum over their runs, nothing left reserved), and
reconcile_aggregates agrees. The budget's clock is moved across midnight in America/New_York half-way through
40 runs on 8 threads (on PostgreSQL they really run at once)."""
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from io import StringIO
from types import SimpleNamespace
from workflows.services.run_requests import ChatRequest
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connections

from budgets.models import BudgetPeriod
from budgets.services import budget_create
from workflows.models import WorkflowExecution
from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db(transaction=True)
NEW_YORK = ZoneInfo("America/New_York")
BEFORE = datetime(2026, 11, 21, 23, 59, 59, tzinfo=NEW_YORK)
AFTER = datetime(2026, 11, 22, 0, 0, 1, tzinfo=NEW_YORK)
RUNS = 40


def test_a_period_rolls_over_under_load_in_the_budgets_time_zone(alice, settings, monkeypatch):
    settings.CHATTER_MAX_CONCURRENT_RUNS = RUNS + 1
    budget = budget_create(owner=alice, scope="user", target_id=str(alice.pk), period="day",
                           timezone_name="America/New_York", mode="hard", limit_tokens=1_000_000)
    written, lock = [], threading.Lock()

    def budget_clock():  # the budgets' "now": midnight passes once half the runs have been written
        with lock:
            return BEFORE if len(written) < RUNS // 2 else AFTER

    monkeypatch.setattr("budgets.services.timezone", SimpleNamespace(now=budget_clock))

    def turn(i):
        try:
            execution = execution_run_now(ChatRequest(owner=alice, message=f"hello {i}", config={"max_tokens": 64}))
            with lock:
                written.append(execution.pk)
            return execution.status
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(turn, range(RUNS))) == ["completed"] * RUNS

    first_day = BEFORE.replace(hour=0, minute=0, second=0).astimezone(ZoneInfo("UTC"))
    next_day = AFTER.replace(hour=0, minute=0, second=0).astimezone(ZoneInfo("UTC"))
    periods = {p.starts_at: p for p in BudgetPeriod.objects.filter(budget=budget)}
    assert set(periods) == {first_day, next_day}  # each made once, by whichever run came first
    by_day = {first_day: [], next_day: []}
    for execution in WorkflowExecution.objects.filter(owner=alice):
        (hold,) = execution.budget_holds
        by_day[datetime.fromisoformat(hold["starts_at"])].append(execution)
    assert len(by_day[first_day]) >= RUNS // 2 and by_day[next_day]  # both days had runs
    for day, runs in by_day.items():
        period = periods[day]
        assert period.spent_tokens == sum(run.total_tokens for run in runs) > 0
        assert (period.reserved_tokens, period.reserved_usd) == (0, 0)
        assert period.spent_usd == sum(run.cost for run in runs)
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 0: every aggregate, budgets included
