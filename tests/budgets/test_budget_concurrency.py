"""A hard budget under load, on PostgreSQL: 200 concurrent requests, chat turns and gateway calls, to two server
processes, against one global token budget. Reservations under the period row's lock keep the spend within the
budget (docs/operations/budgets.md: the overspend bound is 0 when the provider counts no more than the reserved worst
case, which the offline `local` model, counted by the same estimator, never does); every refused request wrote
no run and exactly one audit row; each threshold the spend reached fired exactly once; the reservations all come
back; the aggregates reconcile."""
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import httpx
import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from budgets.models import BudgetPeriod
from tests.factories import ApiTokenFactory, BudgetFactory
from workflows.models import ExecutionEvent, WorkflowExecution

REQUESTS = 200
THREADS = 24
LIMIT_TOKENS = 1500  # room for a few dozen of these turns (about 30 tokens each), not 200
THRESHOLDS = [10, 25, 50, 75, 90]
SERVER_ENV = {"CHATTER_MAX_CONCURRENT_RUNS": "1000", "CHATTER_RUN_THROTTLE": "100000/min"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_chat_and_gateway_runs_stay_within_a_hard_budget(daphne_server, alice, bob, staff):
    servers = [daphne_server(**SERVER_ENV), daphne_server(**SERVER_ENV)]
    budget = BudgetFactory(owner=staff, set_by_staff=True, scope="global", period="day",
                           timezone="Europe/Paris", limit_tokens=LIMIT_TOKENS, mode="hard",
                           thresholds=THRESHOLDS)
    keys = {user.username: ApiTokenFactory(user=user).key for user in (alice, bob)}
    # One client for every thread (httpx's clients are thread-safe): each new one loads the CA bundle, about 40 ms
    # of CPU, as much as a refused request costs the servers.
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=2 * THREADS))

    def request(i: int) -> tuple[str, httpx.Response]:
        server, user = servers[i % 2], ("alice", "bob")[i // 2 % 2]
        headers = {"Authorization": f"Bearer {keys[user]}"}
        if i % 3 == 0:  # a gateway call
            return "gateway", client.post(f"{server.base_url}/v1/chat/completions", headers=headers, json={
                "model": "local-echo-1", "max_tokens": 20, "messages": [{"role": "user", "content": f"call {i}"}]})
        return "chat", client.post(f"{server.base_url}/api/v1/chat/", headers=headers,
                                   json={"message": f"turn {i}", "max_tokens": 20, "enable_tools": False})

    with client, ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(request, range(REQUESTS)))

    ok = [(kind, r) for kind, r in answers if r.status_code in (200, 201)]
    refused = [(kind, r) for kind, r in answers if r.status_code == 429]
    assert len(ok) + len(refused) == REQUESTS, {r.status_code: r.text[:200] for _, r in answers}
    assert ok and refused and {kind for kind, _ in refused} == {"chat", "gateway"}
    for kind, response in refused:
        error = response.json()["error"]
        assert error["code"] == "budget_exceeded", error
        if kind == "gateway":
            assert error["type"] == "insufficient_quota"
    # Every admitted request is one run, every refused one none, and each refusal one audit row.
    runs = WorkflowExecution.objects.all()
    assert runs.count() == len(ok) and set(runs.values_list("status", flat=True)) == {"completed"}
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    assert AuditEvent.objects.filter(action="limit.exceeded", data__limit="budget").count() == len(refused)
    period = BudgetPeriod.objects.get(budget=budget)
    spent = sum(runs.values_list("total_tokens", flat=True))
    assert period.spent_tokens == spent <= LIMIT_TOKENS  # the bound: nothing over
    assert (period.reserved_tokens, period.reserved_usd) == (0, 0)
    reached = [threshold for threshold in THRESHOLDS if threshold * LIMIT_TOKENS <= spent * 100]
    assert reached and period.thresholds_fired == reached
    alerts = AuditEvent.objects.filter(action="budget.threshold")
    assert sorted(row.data["threshold"] for row in alerts) == reached  # each once, whatever the concurrency
    # staff's budget counts everyone's spend: its crossings are staff's (audit rows about it), not the runs' owners'
    assert {(row.actor_id, row.target_id) for row in alerts} == {(None, str(budget.pk))}
    assert not ExecutionEvent.objects.filter(event="budget_threshold").exists()
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out, stderr=StringIO())  # exits 1 (SystemExit) on drift
