"""Schedules: cron runs of a template or definition, fired by the one django-q2 scheduler."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from tests.api.conftest import assert_error
from tests.invariants import assert_all
from workflows.models import WorkflowExecution, WorkflowSchedule
from workflows.services.schedules import (
    SCHEDULER_NAME,
    schedule_next_run,
    schedules_run_due,
)

pytestmark = pytest.mark.django_db
URL = "/api/v1/schedules/"
DAILY = {"name": "daily summary", "template": "summarize", "cron": "0 9 * * *", "timezone": "Europe/Paris",
         "input": {"message": "Summarize the news."}}


def test_it_creates_a_schedule_with_its_next_run_in_its_time_zone(api):
    response = api.post(URL, DAILY, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["template"], body["cron"], body["timezone"], body["enabled"]) == (
        "summarize", "0 9 * * *", "Europe/Paris", True)
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert (next_run.astimezone(ZoneInfo("Europe/Paris")).hour, next_run.minute) == (9, 0)
    assert next_run > datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("change", "path", "code"),
    [
        ({"cron": "61 * * * *"}, "cron", "invalid_cron"),
        ({"cron": "* * * *"}, "cron", "invalid_cron"),
        ({"cron": "@daily"}, "cron", "invalid_cron"),
        ({"cron": "0 9 30 2 *"}, "cron", "invalid_cron"),  # 30 February: a valid cron that never fires
        ({"cron": "0 9 31 4,6,9,11 *"}, "cron", "invalid_cron"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_timezone"),
        ({"timezone": "localtime"}, "timezone", "invalid_timezone"),  # files of zoneinfo's directory, no zones
        ({"timezone": "Factory"}, "timezone", "invalid_timezone"),
        ({"timezone": "posixrules"}, "timezone", "invalid_timezone"),
        ({"config": {"temperature": 7}}, "config.temperature", "out_of_range"),
    ],
)
def test_bad_input_is_a_400_with_details_and_no_row(api, change, path, code):
    details = assert_error(api.post(URL, {**DAILY, **change}, format="json"), 400, "validation_error")
    assert {(d["path"], d["code"]) for d in details} >= {(path, code)}
    assert WorkflowSchedule.objects.count() == 0


@pytest.mark.parametrize(("cron", "field"), [
    ("0 25 * * *", "its hour field '25'"), ("61 * * * *", "its minute field '61'"),
    ("0 9 1 13 *", "its month field '13'"), ("0 9 * * mon-xyz", "weekday"), ("*/0 * * * *", "its minute field '*/0'")])
def test_a_cron_field_out_of_range_is_named(api, cron, field):
    details = assert_error(api.post(URL, {**DAILY, "cron": cron}, format="json"), 400, "validation_error")
    assert details[0]["code"] == "invalid_cron" and field in details[0]["message"], details


def test_patching_in_a_cron_that_never_fires_is_a_400_and_changes_nothing(api):
    schedule_id = api.post(URL, DAILY, format="json").json()["id"]
    details = assert_error(api.patch(f"{URL}{schedule_id}/", {"cron": "0 9 31 2 *"}, format="json"),
                           400, "validation_error")
    assert [(d["path"], d["code"]) for d in details] == [("cron", "invalid_cron")]
    assert WorkflowSchedule.objects.get().cron == DAILY["cron"]


def test_month_ends_and_leap_days_fire_only_on_days_that_exist(api, monkeypatch):
    held = datetime(2026, 1, 31, 12, tzinfo=timezone.utc)  # after 09:00 on the 31st: the next 31st is in March
    monkeypatch.setattr("django.utils.timezone.now", lambda: held)
    utc = {**DAILY, "timezone": "UTC"}
    month_end = api.post(URL, {**utc, "cron": "0 9 31 * *"}, format="json").json()
    leap_day = api.post(URL, {**utc, "cron": "0 9 29 2 *"}, format="json").json()
    assert datetime.fromisoformat(month_end["next_run_at"]) == datetime(2026, 3, 31, 9, tzinfo=timezone.utc)
    assert datetime.fromisoformat(leap_day["next_run_at"]) == datetime(2028, 2, 29, 9, tzinfo=timezone.utc)


def test_a_stored_cron_that_never_fires_stops_itself_not_the_other_schedules(api, alice):
    """A row written before crons were checked for a date that exists: the scheduler tick ends it and runs the
    other due schedules."""
    good_id = api.post(URL, {**DAILY, "cron": "* * * * *"}, format="json").json()["id"]
    bad_id = api.post(URL, DAILY, format="json").json()["id"]
    due = WorkflowSchedule.objects.get(pk=good_id).next_run_at
    WorkflowSchedule.objects.filter(pk=bad_id).update(cron="0 9 30 2 *", next_run_at=due)

    [execution] = schedules_run_due(now=due)

    assert str(execution.schedule_id) == good_id
    assert WorkflowSchedule.objects.get(pk=bad_id).next_run_at is None


def test_another_users_schedule_is_invisible(api, bob_api):
    schedule_id = api.post(URL, DAILY, format="json").json()["id"]
    assert bob_api.get(URL).json()["count"] == 0
    for call in (bob_api.get, bob_api.delete):
        assert_error(call(f"{URL}{schedule_id}/"), 404, "not_found")
    assert_error(bob_api.patch(f"{URL}{schedule_id}/", {"enabled": False}, format="json"), 404, "not_found")
    assert WorkflowSchedule.objects.get().enabled is True


def test_patching_the_cron_moves_the_next_run_and_disabling_clears_it(api):
    schedule_id = api.post(URL, DAILY, format="json").json()["id"]
    body = api.patch(f"{URL}{schedule_id}/", {"cron": "*/5 * * * *"}, format="json").json()
    assert datetime.fromisoformat(body["next_run_at"]).minute % 5 == 0
    assert api.patch(f"{URL}{schedule_id}/", {"enabled": False}, format="json").json()["next_run_at"] is None
    assert_error(api.patch(f"{URL}{schedule_id}/", {"cron": "nope"}, format="json"), 400, "validation_error")
    assert WorkflowSchedule.objects.get().cron == "*/5 * * * *"
    details = assert_error(api.patch(f"{URL}{schedule_id}/", {"template": "tool_agent"}, format="json"),
                           400, "validation_error")
    assert details == [{"path": "template", "code": "read_only", "message": "template is fixed once the schedule exists"}]
    assert WorkflowSchedule.objects.get().template.key == "summarize"


def test_a_due_schedule_starts_a_scheduled_run_owned_by_its_owner_once(api, alice, django_capture_on_commit_callbacks):
    schedule_id = api.post(URL, {**DAILY, "cron": "* * * * *"}, format="json").json()["id"]
    due = WorkflowSchedule.objects.get().next_run_at
    with django_capture_on_commit_callbacks(execute=True):
        started = schedules_run_due(now=due)
    assert schedules_run_due(now=due) == []  # the tick is claimed: a second worker starts nothing
    [execution] = started
    execution.refresh_from_db()
    assert (execution.mode, execution.owner, str(execution.schedule_id)) == ("scheduled", alice, schedule_id)
    assert execution.status == "completed"  # test settings run the queued task synchronously
    schedule = WorkflowSchedule.objects.get()
    assert (schedule.last_execution, schedule.last_run_at) == (execution, due)
    assert schedule.next_run_at == schedule_next_run(cron="* * * * *", timezone_name="Europe/Paris", after=due)
    assert_all(execution)


def test_a_disabled_schedule_never_runs(api):
    api.post(URL, {**DAILY, "enabled": False}, format="json")
    assert schedules_run_due(now=datetime.now(timezone.utc) + timedelta(days=2)) == []
    assert WorkflowExecution.objects.count() == 0


def test_the_scheduler_exists_once_however_often_we_migrate():
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    assert Schedule.objects.filter(name=SCHEDULER_NAME).count() == 1
    assert Schedule.objects.get(name=SCHEDULER_NAME).func == "workflows.tasks.schedules_run_due_task"


GRAPH = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
         "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}


SOURCELESS = {key: value for key, value in DAILY.items() if key != "template"}  # DAILY, to run something else


def bobs_public_source(bob_api, source: str) -> tuple[str, str, dict]:
    """Bob's public template or definition: its id, the URL he changes it at, and how a schedule names it."""
    if source == "template":
        made = bob_api.post("/api/v1/workflows/templates/", {"key": "bobs", "name": "bob's", "graph": GRAPH,
                                                             "is_public": True}, format="json").json()
        return made["id"], f"/api/v1/workflows/templates/{made['id']}/", {"template": "bobs"}
    made = bob_api.post("/api/v1/workflows/definitions/", {"name": "bob's", "is_public": True, **GRAPH},
                        format="json").json()
    return made["id"], f"/api/v1/workflows/definitions/{made['id']}/", {"definition_id": made["id"]}


def test_deleting_a_template_takes_its_schedules_with_it(api):
    template = api.post("/api/v1/workflows/templates/", {"key": "mine", "name": "mine", "graph": GRAPH},
                        format="json").json()
    schedule_id = api.post(URL, {**DAILY, "template": "mine"}, format="json").json()["id"]

    assert api.delete(f"/api/v1/workflows/templates/{template['id']}/").status_code == 204

    assert_error(api.get(f"{URL}{schedule_id}/"), 404, "not_found")
    [row] = api.get("/api/v1/audit/events/?action=schedule.deleted").json()["results"]
    assert (row["target_id"], row["data"]["template"]) == (schedule_id, "mine")


@pytest.mark.parametrize("source", ["template", "definition"])
def test_deleting_a_public_source_takes_another_users_schedule_in_the_deleters_name(api, bob_api, source):
    source_id, url, named = bobs_public_source(bob_api, source)
    schedule_id = api.post(URL, {**SOURCELESS, **named}, format="json").json()["id"]

    assert bob_api.delete(url).status_code == 204  # was a 500, and both stayed

    assert_error(api.get(f"{URL}{schedule_id}/"), 404, "not_found")
    assert bob_api.get(url).status_code == 404
    # bob did it: the row is his (alice did nothing), and says what took the schedule
    assert api.get("/api/v1/audit/events/?action=schedule.deleted").json()["count"] == 0
    [row] = bob_api.get("/api/v1/audit/events/?action=schedule.deleted").json()["results"]
    assert row["target_id"] == schedule_id
    assert row["data"]["deleted_with"]["id"] == source_id


@pytest.mark.parametrize("source", ["template", "definition"])
def test_a_schedule_whose_source_was_made_private_is_disabled_saying_why(api, bob_api, source, caplog):
    _, url, named = bobs_public_source(bob_api, source)
    schedule_id = api.post(URL, {**SOURCELESS, **named, "cron": "* * * * *"}, format="json").json()["id"]
    assert bob_api.patch(url, {"is_public": False}, format="json").status_code == 200
    if source == "template":  # alice's own template under that key now: not the one her schedule runs
        assert api.post("/api/v1/workflows/templates/", {"key": "bobs", "name": "mine", "graph": GRAPH},
                        format="json").status_code == 201
    due = WorkflowSchedule.objects.get().next_run_at

    assert schedules_run_due(now=due) == []

    body = api.get(f"{URL}{schedule_id}/").json()
    assert (body["enabled"], body["next_run_at"], body["last_execution"]) == (False, None, None)
    assert body["last_error"].startswith("not_found: ") and datetime.fromisoformat(body["last_error_at"]) == due
    assert WorkflowExecution.objects.count() == 0
    [row] = api.get("/api/v1/audit/events/?action=schedule.disabled").json()["results"]
    assert (row["target_id"], row["actor_type"], row["data"]["reason"]) == (schedule_id, "schedule", body["last_error"])
    [warning] = [r for r in caplog.records if r.name == "workflows.services.schedules"]
    assert (warning.levelname, warning.exc_info) == ("WARNING", None)


def test_a_schedule_refused_by_a_budget_stays_enabled_and_says_why_until_a_run_starts(api):
    schedule_id = api.post(URL, {**DAILY, "cron": "* * * * *"}, format="json").json()["id"]
    budget = api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 1}, format="json").json()
    due = WorkflowSchedule.objects.get().next_run_at

    assert schedules_run_due(now=due) == []

    body = api.get(f"{URL}{schedule_id}/").json()
    assert body["enabled"] is True and datetime.fromisoformat(body["next_run_at"]) > due
    assert body["last_error"].startswith("budget_exceeded: ") and datetime.fromisoformat(body["last_error_at"]) == due
    api.delete(f"/api/v1/budgets/{budget['id']}/")
    [execution] = schedules_run_due(now=datetime.fromisoformat(body["next_run_at"]))
    body = api.get(f"{URL}{schedule_id}/").json()
    assert (body["last_execution"], body["last_error"], body["last_error_at"]) == (str(execution.pk), "", None)


def test_schedules_due_beyond_the_run_limit_take_turns_the_longest_waiting_first(api, settings, monkeypatch):
    """Alice may have 2 runs at once and 3 schedules every minute: each tick refuses one, which stays due and goes
    first on the next tick (the same one, last by name, was refused every time)."""
    settings.CHATTER_MAX_CONCURRENT_RUNS = 2
    tick = at("2026-01-05 08:00")
    monkeypatch.setattr("django.utils.timezone.now", lambda: tick - timedelta(seconds=30))
    ids = [api.post(URL, {**DAILY, "name": name, "cron": "* * * * *"}, format="json").json()["id"] for name in "abc"]
    monkeypatch.undo()
    refused_by_tick, ran = [], set()

    for minute in range(3):
        now = tick + timedelta(minutes=minute)
        started = schedules_run_due(now=now)
        [refused] = set(ids) - {str(execution.schedule_id) for execution in started}
        body = api.get(f"{URL}{refused}/").json()
        assert body["last_error"].startswith("too_many_runs: ")
        assert datetime.fromisoformat(body["next_run_at"]) == now  # still due: tried again on the next tick
        refused_by_tick.append(refused)
        for execution in started:  # the runs end (pending, cancelled) before the next tick
            ran.add(str(execution.schedule_id))
            assert api.post(f"/api/v1/executions/{execution.pk}/cancel/").status_code == 200

    assert refused_by_tick[0] != refused_by_tick[1] != refused_by_tick[2]
    assert ran == set(ids)
    assert api.get(f"{URL}{refused_by_tick[1]}/").json()["last_error"] == ""  # its run started: the refusal cleared


def test_a_stored_cron_and_time_zone_that_are_none_stop_their_schedule_not_the_others(api, caplog):
    """A row written around the checks (the admin's form, before it asked the services): the tick stops it, saying
    why on the schedule, and runs the other due schedules."""
    good_id = api.post(URL, {**DAILY, "cron": "* * * * *"}, format="json").json()["id"]
    bad_id = api.post(URL, {**DAILY, "name": "0 bad (first)", "cron": "* * * * *"}, format="json").json()["id"]
    due = WorkflowSchedule.objects.get(pk=good_id).next_run_at
    WorkflowSchedule.objects.filter(pk=bad_id).update(cron="61 99 * * *", timezone="Not/AZone", next_run_at=due)

    [execution] = schedules_run_due(now=due)

    assert str(execution.schedule_id) == good_id
    body = api.get(f"{URL}{bad_id}/").json()
    assert (body["enabled"], body["next_run_at"], datetime.fromisoformat(body["last_error_at"])) == (True, None, due)
    assert body["last_error"] == ("invalid_cron: '61 99 * * *': its minute field '61' is not valid (0-59, with * , - "
                                  "and /); invalid_timezone: 'Not/AZone' is not an IANA time zone (e.g. Europe/Paris)")
    assert schedules_run_due(now=due) == []  # stopped: the next tick passes it over
    assert api.patch(f"{URL}{bad_id}/", {"cron": "0 9 * * *", "timezone": "UTC"}, format="json").json()["next_run_at"]


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(("cron", "created", "first", "then"), [
    # the night clocks go back in Paris (03:00 CEST is 02:00 CET again): a fixed time in the repeated hour fires once
    ("30 2 * * *", at("2025-10-25 12:00"), at("2025-10-26 00:30"), at("2025-10-27 01:30")),
    # a wildcard hour fires as the hours pass: 02:30 CEST, then 02:30 CET an hour later
    ("30 * * * *", at("2025-10-26 00:05"), at("2025-10-26 00:30"), at("2025-10-26 01:30")),
    # the night clocks go forward (02:00 CET is 03:00 CEST): 02:30 does not exist, it fires at 03:00, as cron does
    ("30 2 * * *", at("2025-03-29 12:00"), at("2025-03-30 01:00"), at("2025-03-31 00:30")),
])
def test_a_schedule_fires_over_a_dst_change_as_cron_does(api, monkeypatch, cron, created, first, then):
    monkeypatch.setattr("django.utils.timezone.now", lambda: created)
    body = api.post(URL, {**DAILY, "cron": cron}, format="json").json()
    monkeypatch.undo()
    assert datetime.fromisoformat(body["next_run_at"]) == first

    [execution] = schedules_run_due(now=first)

    body = api.get(f"{URL}{body['id']}/").json()
    assert (body["last_execution"], datetime.fromisoformat(body["next_run_at"])) == (str(execution.pk), then)
