"""Budgets over the API: set on a user, a key, a group, a template or everyone (the last two by staff), per day,
week, month or all time in a time zone, in USD or tokens; GET shows what is spent and reserved in the current
period. A hard budget with no room refuses a run with 429 budget_exceeded before anything is written (one audit
row); a soft one only counts. A run that reaches a hard budget stops before its next model call."""
from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo
from decimal import Decimal
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from budgets.models import Budget, BudgetPeriod
from budgets.services import period_start
from conversations.models import Conversation, Message
from tests.api.conftest import assert_error
from tests.factories import ApiTokenFactory, GroupFactory
from tests.invariants import assert_all
from workflows.models import LLMCall, WorkflowExecution

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clear_of_midnight")]


def set_budget(api, **body) -> dict:
    response = api.post("/api/v1/budgets/", {"scope": "user", "period": "day", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def chat(api, message="hello", **extra):
    return api.post("/api/v1/chat/", {"message": message, **extra}, format="json")


def test_a_run_is_counted_on_the_budgets_it_falls_under_and_its_reservation_released(api, alice):
    budget = set_budget(api, limit_usd="1.00")

    response = chat(api)

    assert response.status_code == 201
    execution = WorkflowExecution.objects.get()
    shown = api.get("/api/v1/budgets/").json()["results"][0]
    assert shown["id"] == budget["id"] and Decimal(shown["spent_usd"]) == execution.cost > 0
    assert shown["spent_tokens"] == execution.total_tokens and Decimal(shown["reserved_usd"]) == 0
    assert shown["reserved_tokens"] == 0
    assert execution.config["max_tokens"] == 1024  # a hard budget bounds every call (the default cap)
    assert_all(execution)


def test_a_hard_budget_already_spent_refuses_with_429_writes_no_run_and_one_audit_row(api, alice):
    set_budget(api, limit_tokens=2000)
    assert chat(api, max_tokens=100).status_code == 201
    BudgetPeriod.objects.update(spent_tokens=2000)  # spent to the limit (as if by earlier runs)
    before = (WorkflowExecution.objects.count(), Message.objects.count(), Conversation.objects.count())

    refused = chat(api, "again", max_tokens=100)

    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert (WorkflowExecution.objects.count(), Message.objects.count(), Conversation.objects.count()) == before
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    (row,) = AuditEvent.objects.filter(action="limit.exceeded")
    assert row.actor == alice and row.data["limit"] == "budget"
    assert BudgetPeriod.objects.get().reserved_tokens == 0


def test_a_budget_that_cannot_hold_a_runs_worst_case_refuses_it(api):
    set_budget(api, limit_tokens=500)  # less than the first call's worst case (its max_tokens alone)

    assert chat(api, max_tokens=1000).status_code == 429
    assert chat(api, max_tokens=50).status_code == 201


def test_a_soft_budget_counts_but_never_refuses(api):
    set_budget(api, limit_tokens=1, mode="soft")

    assert chat(api).status_code == 201 and chat(api).status_code == 201

    shown = api.get("/api/v1/budgets/").json()["results"][0]
    assert shown["spent_tokens"] == sum(WorkflowExecution.objects.values_list("total_tokens", flat=True)) > 1
    # soft budgets reserve nothing, so cap nothing
    assert [run.config["max_tokens"] for run in WorkflowExecution.objects.all()] == [None, None]


def test_a_run_that_reaches_its_budget_stops_before_its_next_model_call(api):
    # Room for the first call's worst case (its prompt estimate ×1.25 + 32, and 150: about 190 tokens), not for
    # what it spent plus the second call's (about 230): the tool turn's second model call is refused.
    set_budget(api, limit_tokens=210)

    response = chat(api, "What is 12*7?", max_tokens=150)

    assert response.status_code == 201, response.content
    execution = WorkflowExecution.objects.get()
    assert (execution.status, execution.error_type, execution.llm_calls) == ("failed", "budget_exceeded", 1)
    assert execution.total_tokens > 0 and execution.tool_calls == 1  # usage kept (I5)
    period = BudgetPeriod.objects.get()
    assert (period.spent_tokens, period.reserved_tokens) == (execution.total_tokens, 0)
    assert execution.events.filter(event="limit_exceeded", data__limit="budget").exists()
    assert_all(execution)


def test_key_budgets_apply_to_runs_made_with_that_key_only(api, alice):
    token = ApiTokenFactory(user=alice, name="ci")
    key = token.key
    set_budget(api, scope="key", target_id=str(token.uid), limit_tokens=1, mode="hard")
    by_key = APIClient()
    by_key.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    assert by_key.post("/api/v1/chat/", {"message": "hi"}, format="json").status_code == 429
    assert chat(api).status_code == 201  # her session is not that key


def test_group_and_global_budgets_are_staffs_and_apply_to_members_and_everyone(api, alice, bob, bob_api, staff):
    team = GroupFactory(name="team", members=[alice])
    admin = APIClient()
    admin.force_login(staff)
    assert api.post("/api/v1/budgets/", {"scope": "global", "period": "day", "limit_tokens": 1},
                    format="json").status_code == 400
    set_budget(admin, scope="group", target_id=str(team.pk), limit_tokens=1)

    assert chat(api).status_code == 429
    assert chat(bob_api).status_code == 201

    set_budget(admin, scope="global", limit_tokens=1)
    assert chat(bob_api).status_code == 429


def test_template_budgets_apply_to_runs_of_that_template(api):
    set_budget(api, scope="template", target_id="universal_chat", limit_tokens=1)

    assert chat(api).status_code == 429
    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "end"}]}
    assert api.post("/api/v1/executions/", {"graph": graph, "input": {"message": "x"}},
                    format="json").status_code == 201


def test_bob_neither_sees_alices_budgets_nor_budgets_her_key(api, alice, bob_api):
    token = ApiTokenFactory(user=alice)
    set_budget(api, limit_usd="1")

    assert bob_api.get("/api/v1/budgets/").json()["results"] == []
    assert bob_api.post("/api/v1/budgets/", {"scope": "key", "target_id": str(token.uid), "period": "day",
                                             "limit_usd": "1"}, format="json").status_code == 400
    assert bob_api.post("/api/v1/budgets/", {"scope": "user", "target_id": str(alice.pk), "period": "day",
                                             "limit_usd": "1"}, format="json").status_code == 400


@pytest.mark.parametrize("body, field", [
    ({"scope": "user", "period": "day"}, "limit_usd"),
    ({"scope": "user", "period": "day", "limit_usd": "1", "limit_tokens": 5}, "limit_usd"),
    ({"scope": "user", "period": "year", "limit_usd": "1"}, "period"),
    ({"scope": "user", "period": "day", "limit_usd": "1", "timezone": "Mars/Olympus"}, "timezone"),
    ({"scope": "user", "period": "day", "limit_usd": "1", "timezone": "localtime"}, "timezone"),
    ({"scope": "planet", "period": "day", "limit_usd": "1"}, "scope"),
    ({"scope": "user", "period": "day", "limit_usd": "-1"}, "limit_usd"),
])
def test_bad_input_is_a_400_and_sets_no_budget(api, body, field):
    response = api.post("/api/v1/budgets/", body, format="json")

    assert response.status_code == 400
    assert field in {item["path"] for item in response.json()["error"]["details"]}
    assert not Budget.objects.exists()


def test_a_usd_limit_up_to_ten_million_reads_back_exactly_and_one_past_it_is_a_400(api):
    """SQLite keeps a decimal as a double: a limit past 10^7 dollars may not read back as written, and one near 10^12
    (within the serializer's 20 digits) would break every later read of the row, every chat turn it binds."""
    for limit in ("999999999999.99999999", "10000000.00000001"):
        details = assert_error(api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_usd": limit},
                                        format="json"), 400, "validation_error")
        assert [item["path"] for item in details] == ["limit_usd"]
    assert not Budget.objects.exists()

    set_budget(api, limit_usd="10000000")
    set_budget(api, limit_usd="9999999.99999999")

    shown = api.get("/api/v1/budgets/").json()["results"]
    assert sorted(budget["limit_usd"] for budget in shown) == ["10000000.00000000", "9999999.99999999"]
    assert chat(api).status_code == 201


@pytest.mark.parametrize("period, tz, at, start", [
    ("day", "UTC", datetime(2026, 3, 10, 23, 59, tzinfo=dt_timezone.utc), datetime(2026, 3, 10)),
    ("day", "Asia/Tokyo", datetime(2026, 3, 10, 15, 30, tzinfo=dt_timezone.utc), datetime(2026, 3, 10, 15)),
    ("day", "America/New_York", datetime(2026, 3, 10, 3, 0, tzinfo=dt_timezone.utc), datetime(2026, 3, 9, 4)),
    ("week", "Europe/Paris", datetime(2026, 3, 12, 10, tzinfo=dt_timezone.utc), datetime(2026, 3, 8, 23)),
    ("month", "Europe/Paris", datetime(2026, 4, 1, 0, 30, tzinfo=dt_timezone.utc), datetime(2026, 3, 31, 22)),
    ("total", "Europe/Paris", datetime(2026, 4, 1, tzinfo=dt_timezone.utc), datetime(1970, 1, 1)),
])
def test_periods_start_at_local_midnight_in_the_budgets_time_zone(alice, period, tz, at, start):
    budget = Budget(owner=alice, scope="user", period=period, timezone=tz, limit_usd=1)
    assert period_start(budget, at) == start.replace(tzinfo=dt_timezone.utc)


def test_a_new_period_starts_empty_in_the_budgets_time_zone(api, alice):
    """Yesterday's period (in Tokyo) is spent to the limit: today's run gets a fresh period of its own."""
    budget = set_budget(api, limit_tokens=2000, timezone="Asia/Tokyo")
    row = Budget.objects.get(pk=budget["id"])
    today = period_start(row)
    BudgetPeriod.objects.create(budget=row, starts_at=today - timedelta(days=1), spent_tokens=2000)

    assert chat(api, max_tokens=100).status_code == 201

    periods = dict(BudgetPeriod.objects.values_list("starts_at", "spent_tokens"))
    assert periods[today - timedelta(days=1)] == 2000 and 0 < periods[today] < 2000
    assert today.astimezone(ZoneInfo("Asia/Tokyo")).hour == 0
    shown = api.get("/api/v1/budgets/").json()["results"][0]
    assert shown["period_start"] == today.isoformat() and shown["spent_tokens"] == periods[today]


def test_midnight_passing_while_budgets_are_listed_shows_each_one_period_and_its_own_spend(api, monkeypatch):
    """The period a budget shows and the spend it shows are read from the same moment: midnight passing between the
    two reads of the clock never pairs the new day's start with the old day's spend."""
    before = datetime(2026, 3, 10, 23, 59, 59, tzinfo=dt_timezone.utc)
    monkeypatch.setattr("django.utils.timezone.now", lambda: before)
    set_budget(api, limit_usd="1.00")
    assert chat(api).status_code == 201
    spent = Decimal(WorkflowExecution.objects.get().cost)
    reads = iter([before])  # the first read of the budgets' clock is before midnight, every later one after it

    def clock():
        return next(reads, before + timedelta(seconds=2))

    monkeypatch.setattr("budgets.services.timezone", SimpleNamespace(now=clock))

    shown = api.get("/api/v1/budgets/").json()["results"][0]

    assert (shown["period_start"], Decimal(shown["spent_usd"])) in {
        ("2026-03-10T00:00:00+00:00", spent), ("2026-03-11T00:00:00+00:00", Decimal(0))}
    assert spent > 0


def test_a_run_ended_from_its_rows_gives_its_reservation_back(api, alice):
    """A background run reserves when it is written; cancelled before a worker starts it (ended from its rows,
    as the recovery sweep ends a run whose process died), its reservation is released and nothing is spent.
    (In this test's transaction the run is never handed to a worker: that happens on commit.)"""
    set_budget(api, limit_tokens=5000)
    pending = api.post("/api/v1/chat/", {"message": "later", "background": True, "max_tokens": 100},
                       format="json")
    assert pending.status_code == 202, pending.content
    period = BudgetPeriod.objects.get()
    assert period.reserved_tokens > 0 and WorkflowExecution.objects.get().budget_holds

    assert api.post(f"/api/v1/executions/{pending.json()['id']}/cancel/").status_code == 200

    period.refresh_from_db()
    assert (period.reserved_tokens, period.spent_tokens) == (0, 0)
    assert WorkflowExecution.objects.get().status == "cancelled"


def test_reconcile_aggregates_checks_budget_spend_against_the_runs_and_fixes_it(api):
    set_budget(api, limit_tokens=5000)
    chat(api, max_tokens=100)
    chat(api, "more", max_tokens=100)
    call_command("reconcile_aggregates", stdout=StringIO())  # clean: no SystemExit

    BudgetPeriod.objects.update(spent_tokens=1, reserved_tokens=7)  # drift
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("reconcile_aggregates", stdout=out, stderr=StringIO())
    assert "drift budget_period" in out.getvalue()

    call_command("reconcile_aggregates", "--fix", stdout=StringIO(), stderr=StringIO())
    period = BudgetPeriod.objects.get()
    assert (period.spent_tokens, period.reserved_tokens) == (
        sum(WorkflowExecution.objects.values_list("total_tokens", flat=True)), 0)


def test_a_provider_that_streams_past_max_tokens_is_stopped_at_a_token_boundary(api, openai_server):
    """A server that ignores max_tokens (the stub streams its script whatever is asked) under a hard budget: the
    call is stopped mid-stream, billed by estimate (flagged), and the run fails budget_exceeded."""
    set_budget(api, limit_tokens=5000)
    openai_server.reply(content=" ".join(["word"] * 400), usage={"prompt_tokens": 9, "completion_tokens": 400,
                                                                 "total_tokens": 409})

    response = chat(api, "write a lot", provider="openai", model="gpt-4o-mini", max_tokens=10, enable_tools=False)

    assert response.status_code == 201, response.content
    execution = WorkflowExecution.objects.get()
    assert (execution.status, execution.error_type) == ("failed", "budget_exceeded")
    (call,) = LLMCall.objects.filter(execution=execution)
    assert call.estimated and call.completion_tokens < 400  # stopped well before the end, and flagged
    assert Message.objects.get(execution=execution, role="assistant").usage_estimated
    period = BudgetPeriod.objects.get()
    assert (period.spent_tokens, period.reserved_tokens) == (execution.total_tokens, 0)


def test_a_budget_stored_with_an_unknown_time_zone_counts_its_periods_in_utc_and_says_so(api, alice):
    """A row from before the time zone checks (3756938: the admin saved "Bad/Zone") is read, not a 500: its periods
    are counted in UTC and the API names the problem."""
    budget = set_budget(api, limit_usd="1.00", timezone="Europe/Paris")
    Budget.objects.filter(pk=budget["id"]).update(timezone="Bad/Zone")

    turn = chat(api)
    listed = api.get("/api/v1/budgets/")

    assert turn.status_code == 201, turn.content
    assert listed.status_code == 200, listed.content
    shown = listed.json()["results"][0]
    now = datetime.now(dt_timezone.utc)
    assert shown["timezone"] == "Bad/Zone" and "UTC" in shown["timezone_error"]
    assert datetime.fromisoformat(shown["period_start"]) == datetime(now.year, now.month, now.day,
                                                                     tzinfo=dt_timezone.utc)
    assert Decimal(shown["spent_usd"]) == WorkflowExecution.objects.get().cost > 0
    assert set_budget(api, limit_usd="2.00", timezone="UTC")["timezone_error"] is None
