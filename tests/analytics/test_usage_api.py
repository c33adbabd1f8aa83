"""GET /api/v1/analytics/usage/: usage by day, provider, model, template and conversation, equal to the same
figures computed from the raw rows; owner-scoped (staff see everyone); JSON and CSV; bad input is a 400."""
import csv
import io
import uuid
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.utils import timezone

from conversations.models import Message
from conversations.services import message_delete
from tests.factories import run_request
from tests.analytics.usage import COUNTERS, assert_usage_exact, totals
from tests.invariants import assert_all
from tests.api.conftest import assert_error
from tests.clock import at, noon_of, on_day
from workflows.models import WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_cancel, execution_create, execution_run

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/usage/"
LINEAR = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


def run(**kwargs) -> WorkflowExecution:
    return execution_run(execution_id=execution_create(run_request(**kwargs)).pk)


@pytest.fixture
def today() -> date:
    return timezone.now().date()


@pytest.fixture
def usage(alice, bob, monkeypatch, today):
    """Alice: turns on two days (one with tools), a failed turn, a cancelled one, a standalone run and a template
    run, and a deleted reply. Bob: one turn. The clock stays at noon of `today` after, so a test that crosses
    midnight reads the same days."""
    on_day(monkeypatch, today - timedelta(days=3))
    first = run(owner=alice, message="What is 12*7?", chat=True)
    run(owner=alice, message="again", chat=True, conversation_id=first.conversation_id)
    run(owner=alice, message="What is 1+1?", chat=True, config={"max_total_tokens": 3})
    on_day(monkeypatch, today)
    pending = execution_create(ChatRequest(owner=alice, message="never mind", mode="background"))
    execution_cancel(execution=pending, actor=alice)
    run(owner=alice, graph=LINEAR, message="hi")
    run(owner=alice, template="summarize", message="Long text " * 20)
    doomed = run(owner=alice, message="hello", chat=True)
    message_delete(message_id=Message.objects.get(execution=doomed, role="assistant").pk)
    run(owner=bob, message="What is 2+2?", chat=True)
    return assert_usage_exact()


def figures(row: dict) -> dict:
    return {name: Decimal(row[name]) if name == "cost" else row[name] for name in COUNTERS}


def report(client, **params) -> dict:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()


def group_of(group_by: str, row: dict) -> dict:
    """The raw-row dimensions a report row stands for."""
    if group_by == "day":
        return {"day": date.fromisoformat(row["day"])}
    if group_by == "provider":
        return {"provider": row["provider"]}
    if group_by == "model":
        return {"provider": row["provider"], "model": row["model"]}
    column = f"{group_by}_id"
    return {column: uuid.UUID(row[column]) if row[column] else None}


@pytest.mark.parametrize("group_by", ["day", "provider", "model", "template", "conversation"])
def test_every_row_equals_the_raw_rows_of_its_group(alice_api, alice, usage, group_by):
    body = report(alice_api, group_by=group_by)

    assert body["group_by"] == group_by and body["owner"] == "alice"
    assert body["count"] == len(body["results"]) > 0
    for row in body["results"]:
        assert figures(row) == totals(usage, owner_id=alice.pk, **group_of(group_by, row)), row
    assert figures(body["totals"]) == totals(usage, owner_id=alice.pk)
    assert sum(figures(row)["cost"] for row in body["results"]) == totals(usage, owner_id=alice.pk)["cost"]


def test_the_day_report_counts_failures_cancels_and_deletes(alice_api, alice, usage, today):
    days = {row["day"]: row for row in report(alice_api)["results"]}

    assert list(days) == [str(today - timedelta(days=3)), str(today)]
    earlier, latest = days[str(today - timedelta(days=3))], days[str(today)]
    assert (earlier["executions"], earlier["completed_executions"], earlier["failed_executions"]) == (3, 2, 1)
    assert (earlier["messages"], earlier["llm_calls"]) == (6, 4)
    # today: a cancelled turn (2 messages), a standalone run, a template run, a turn whose reply was deleted
    assert (latest["executions"], latest["cancelled_executions"], latest["messages"]) == (4, 1, 3)


def test_rows_have_the_columns_of_their_group(alice_api, usage):
    columns = {
        "day": {"day"}, "provider": {"provider"}, "model": {"provider", "model"},
        "template": {"template_id", "template_key"}, "conversation": {"conversation_id", "conversation_title"},
    }
    for group_by, expected in columns.items():
        row = report(alice_api, group_by=group_by)["results"][0]
        assert set(row) == expected | set(COUNTERS)
    keys = {row["template_key"] for row in report(alice_api, group_by="template")["results"]}
    assert keys == {"universal_chat", "summarize", None}


def test_a_date_range_keeps_only_its_days(alice_api, alice, usage, today):
    earlier = str(today - timedelta(days=3))

    body = report(alice_api, start=earlier, end=earlier)
    assert [row["day"] for row in body["results"]] == [earlier]
    assert (body["start"], body["end"]) == (earlier, earlier)
    assert figures(body["totals"]) == totals(usage, owner_id=alice.pk, day=today - timedelta(days=3))
    assert report(alice_api, start=str(today + timedelta(days=1)))["results"] == []
    assert report(alice_api, group_by="model", end=str(today - timedelta(days=4)))["count"] == 0


def test_bob_sees_only_his_usage(bob_api, bob, alice, usage):
    for group_by in ("day", "conversation", "template", "model"):
        body = report(bob_api, group_by=group_by)
        assert figures(body["totals"]) == totals(usage, owner_id=bob.pk)
    conversations = {row["conversation_id"] for row in report(bob_api, group_by="conversation")["results"]}
    assert conversations == {str(WorkflowExecution.objects.get(owner=bob).conversation_id)}


def test_a_user_may_name_only_themselves_as_owner(alice_api, usage):
    assert report(alice_api, owner="alice")["owner"] == "alice"
    assert_error(alice_api.get(URL, {"owner": "bob"}), 403, "permission_denied")
    assert_error(alice_api.get(URL, {"owner": "nobody"}), 403, "permission_denied")


def test_staff_see_everyone_or_one_user(staff_api, alice, bob, usage):
    everyone = report(staff_api, group_by="conversation")
    assert everyone["owner"] is None
    assert figures(everyone["totals"]) == totals(usage)
    assert figures(report(staff_api, owner="bob")["totals"]) == totals(usage, owner_id=bob.pk)
    assert figures(report(staff_api, owner="alice", group_by="model")["totals"]) == totals(usage, owner_id=alice.pk)
    assert assert_error(staff_api.get(URL, {"owner": "nobody"}), 400, "validation_error") == [
        {"path": "owner", "code": "validation_error", "message": "no user named 'nobody'"}]


def test_pages_split_the_rows_and_totals_cover_them_all(alice_api, alice, usage):
    first = report(alice_api, group_by="conversation", page_size=1)
    second = report(alice_api, group_by="conversation", page_size=1, page=2)

    assert first["count"] == second["count"] == 5  # 4 conversations and the standalone runs
    assert len(first["results"]) == 1 and first["next"] and first["previous"] is None
    assert first["results"] != second["results"]
    assert figures(first["totals"]) == totals(usage, owner_id=alice.pk)
    costs = [Decimal(row["cost"]) for row in report(alice_api, group_by="conversation")["results"]]
    assert costs == sorted(costs, reverse=True)  # the costliest first
    last = report(alice_api, group_by="conversation", page_size=2, page=3)
    assert len(last["results"]) == 1 and last["next"] is None and "page=2" in last["previous"]
    past = report(alice_api, group_by="conversation", page_size=2, page=9)
    assert (past["count"], past["results"]) == (5, [])
    assert figures(past["totals"]) == totals(usage, owner_id=alice.pk)


@pytest.mark.parametrize("how", ["format", "accept"])
def test_it_exports_every_row_as_csv(alice_api, usage, how):
    response = (alice_api.get(URL, {"group_by": "model", "format": "csv"}) if how == "format"
                else alice_api.get(URL, {"group_by": "model"}, HTTP_ACCEPT="text/csv"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-by-model-')
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    expected = report(alice_api, group_by="model")["results"]
    assert rows == [{name: "" if value is None else str(value) for name, value in row.items()} for row in expected]
    assert list(rows[0]) == ["provider", "model", *COUNTERS]


def test_the_csv_export_is_not_paged_and_has_a_header_when_empty(alice_api, usage):
    paged = report(alice_api, group_by="conversation", page_size=1)
    response = alice_api.get(URL, {"group_by": "conversation", "format": "csv", "page_size": 1})
    assert len(list(csv.DictReader(io.StringIO(response.content.decode())))) == paged["count"]

    empty = alice_api.get(URL, {"format": "csv", "start": "2000-01-01", "end": "2000-01-02"})
    assert empty.content.decode() == ",".join(["day", *COUNTERS]) + "\r\n"


def test_a_title_that_looks_like_a_formula_stays_text_in_csv(alice_api, alice, usage):
    conversation = WorkflowExecution.objects.filter(owner=alice, conversation__isnull=False).first().conversation
    conversation.title = "=HYPERLINK(\"http://example.com\")"
    conversation.save(update_fields=["title"])

    response = alice_api.get(URL, {"group_by": "conversation", "format": "csv"})
    titles = [row["conversation_title"] for row in csv.DictReader(io.StringIO(response.content.decode()))]
    assert "'=HYPERLINK(\"http://example.com\")" in titles


@pytest.mark.parametrize(("params", "field"), [
    ({"group_by": "week"}, "group_by"),
    ({"group_by": "DAY"}, "group_by"),
    ({"start": "yesterday"}, "start"),
    ({"end": "2026-13-01"}, "end"),
    ({"start": "2026-11-21T10:00:00Z"}, "start"),
    ({"start": "2026-11-21T00:00:00+02:00"}, "start"),  # a moment, not a UTC day: which day would it be?
    ({"end": "2026-02-30"}, "end"),
    ({"end": "2027-02-29"}, "end"),
    ({"start": "2026-11-21", "end": "2026-11-20"}, "end"),
    ({"page": "0"}, "page"),
    ({"page": "two"}, "page"),
    ({"page_size": "1001"}, "page_size"),
])
def test_bad_parameters_are_a_400_naming_the_parameter(alice_api, params, field):
    details = assert_error(alice_api.get(URL, params), 400, "validation_error")
    assert [d["path"] for d in details] == [field]


def test_errors_are_json_even_when_csv_was_asked_for(alice_api):
    assert_error(alice_api.get(URL, {"group_by": "week", "format": "csv"}), 400, "validation_error")
    assert_error(alice_api.get(URL, {"group_by": "week"}, HTTP_ACCEPT="text/csv"), 400, "validation_error")


def test_it_needs_a_login(client):
    assert_error(client.get(URL), 401, "not_authenticated")


def test_a_user_without_usage_gets_zeros(bob_api):
    body = report(bob_api)
    assert body["count"] == 0 and body["results"] == []
    assert figures(body["totals"]) == {name: Decimal("0") if name == "cost" else 0 for name in COUNTERS}


def test_a_run_that_crosses_midnight_is_booked_on_the_day_it_ended_and_each_message_on_its_own(
        alice_api, alice, monkeypatch):
    """Its outcome and its calls' tokens and cost on the day it ended, the question on the day it was asked, the
    answer on the day it came; every aggregate still the sum of its parts."""
    clock = at(monkeypatch, datetime(2026, 2, 28, 23, 59, 59, tzinfo=dt_timezone.utc))
    pending = execution_create(run_request(owner=alice, message="What is 12*7?", chat=True))
    clock["now"] = datetime(2026, 3, 1, 0, 0, 1, tzinfo=dt_timezone.utc)
    execution = execution_run(execution_id=pending.pk)

    days = {row["day"]: row for row in report(alice_api)["results"]}
    assert list(days) == ["2026-02-28", "2026-03-01"]
    asked, answered = days["2026-02-28"], days["2026-03-01"]
    assert (asked["messages"], asked["executions"], asked["llm_calls"], Decimal(asked["cost"])) == (1, 0, 0, 0)
    assert (answered["messages"], answered["executions"], answered["llm_calls"]) == (1, 1, execution.llm_calls)
    assert Decimal(answered["cost"]) == execution.cost > 0
    assert report(alice_api, start="2026-03-01", end="2026-03-01")["totals"]["total_tokens"] == execution.total_tokens
    assert_usage_exact()
    assert_all(execution)


@pytest.mark.parametrize("url", [URL, "/api/v1/analytics/tools/"])
@pytest.mark.parametrize("how", ["json", "csv"])
def test_the_last_days_a_date_can_be_are_a_range_like_any_other(alice_api, alice, monkeypatch, url, how):
    """9999-12-31 has no next midnight: a report ending on it reads to the end of time, one of the first days of
    the calendar (and the default start 29 days before it) from its beginning; none is a 500."""
    clock = at(monkeypatch, noon_of(date.max))
    run(owner=alice, message="What is 12*7?", chat=True)  # (a turn that calls the calculator)
    clock["now"] = datetime.now(dt_timezone.utc)  # (a login now lasts past the end of the calendar: not then)
    last = alice_api.get(url, {"start": "9999-12-30", "end": "9999-12-31", "format": how})
    assert last.status_code == 200, last.content
    rows = list(csv.DictReader(io.StringIO(last.content.decode()))) if how == "csv" else last.json()["results"]
    assert [int(row["calls"] if "calls" in row else row["executions"]) for row in rows] == [1]
    for params in ({"start": "0001-01-01", "end": "0001-01-01"}, {"end": "0001-01-05"}):
        first = alice_api.get(url, {**params, "format": how})
        assert first.status_code == 200, first.content
