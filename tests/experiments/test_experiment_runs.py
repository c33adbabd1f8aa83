"""An experiment on the OpenAI stub: two prompt versions over 50 items with an LLM judge, tokens and cost exact for
the targets and the judge apart; a budget that stops it cleanly; cancel and resume without running an item twice."""
import threading
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from audit.models import AuditEvent
from datasets.models import Dataset, DatasetItem
from experiments.models import Experiment, ExperimentResult, ExperimentRun
from scores.models import Score
from tests.api.conftest import assert_error
from tests.datasets.factories import DatasetFactory, DatasetItemFactory
from tests.experiments.conftest import JUDGE_MODEL, OPENAI
from tests.factories import WorkflowExecutionFactory
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/experiments/"
TARGET_USAGE = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
JUDGE_USAGE = {"prompt_tokens": 80, "completion_tokens": 3, "total_tokens": 83}
# USD per million tokens, as seeded: gpt-4o-mini 0.15 in / 0.60 out; gpt-4o 2.50 / 10.00
TARGET_COST = (30 * Decimal("0.15") + 5 * Decimal("0.60")) / 1_000_000
JUDGE_COST = (80 * Decimal("2.50") + 3 * Decimal("10.00")) / 1_000_000


def dataset_of(owner, count: int):
    dataset = DatasetFactory(owner=owner)
    for n in range(count):
        DatasetItemFactory(dataset=dataset, input={"message": f"question {n}"}, expected_output=f"answer {n}")
    return dataset


def run_in_background(owner, body: dict) -> threading.Thread:
    """POST the experiment in a thread: django-q2 runs its task inline in tests, so the POST runs it."""
    def post() -> None:
        client = APIClient()
        client.force_login(owner)
        try:
            client.post(URL, body, format="json")
        finally:
            connection.close()

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def first_call_held(openai_server) -> None:
    """Until the test releases it, the first run's model call waits (then each item answers at once)."""
    deadline = time.monotonic() + 30
    while not openai_server.requests and time.monotonic() < deadline:
        time.sleep(0.05)


def refused_often(times: int = 100) -> None:
    """Until the owner's run limit has refused a pair `times` times (each refusal is audited `limit.exceeded`)."""
    deadline = time.monotonic() + 30
    while AuditEvent.objects.filter(action="limit.exceeded").count() < times and time.monotonic() < deadline:
        time.sleep(0.05)


def versions_body(dataset, **extra) -> dict:
    return {"name": "v1 vs v2", "dataset": str(dataset.pk),
            "targets": [{"name": "v1", "prompt": {"name": "support", "version": 1}, "config": OPENAI},
                        {"name": "v2", "prompt": {"name": "support", "version": 2}, "config": OPENAI}], **extra}


def one_target_held(owner, openai_server) -> tuple:
    """(dataset, thread): an experiment of one target over 3 items, posted in the background, its first item's model
    call held by the stub until the test releases it (each later call answers at once)."""
    dataset = dataset_of(owner, 3)
    openai_server.reply(content="ok", usage=TARGET_USAGE, hold=True)
    openai_server.always(content="ok", usage=TARGET_USAGE)
    body = versions_body(dataset)
    body["targets"] = body["targets"][:1]
    thread = run_in_background(owner, body)
    first_call_held(openai_server)
    return dataset, thread


def test_two_prompt_versions_over_50_items_with_a_judge_account_targets_and_judge_apart(api, alice, support,
                                                                                        openai_server):
    dataset = dataset_of(alice, 50)
    # One at a time, so the stub's replies go in order: per item, v1's run, its judge, v2's run, its judge.
    for n in range(50):
        for right in (True, False):
            openai_server.reply(content=f"answer {n}" if right else "no idea", usage=TARGET_USAGE)
            openai_server.reply(content='{"score": %s}' % (1 if right else 0.25), usage=JUDGE_USAGE,
                                model=JUDGE_MODEL)

    created = api.post(URL, versions_body(dataset, evaluators=[
        {"type": "exact_match"},
        {"type": "llm_judge", "name": "judge", "provider": "openai", "model": JUDGE_MODEL}]), format="json")

    assert created.status_code == 201, created.json()
    experiment = api.get(f"{URL}{created.json()['id']}/").json()
    assert experiment["status"] == "completed" and experiment["progress"]["done"] == 100
    assert openai_server.pending == 0 and len(openai_server.requests) == 200
    judged = [r.body for r in openai_server.requests[1::2]]
    assert {body["model"] for body in judged} == {JUDGE_MODEL}
    assert "Expected output:\nanswer 0\n\nOutput:\nanswer 0" in judged[0]["messages"][-1]["content"]

    summary, runs = experiment["summary"], experiment["runs"]
    for name, right in (("v1", True), ("v2", False)):
        target = summary["targets"][name]
        assert target["items"] == 50 and target["failed"] == 0
        assert (target["prompt_tokens"], target["completion_tokens"], target["total_tokens"]) == (1500, 250, 1750)
        assert Decimal(target["cost"]) == 50 * TARGET_COST
        assert (target["judge_prompt_tokens"], target["judge_total_tokens"]) == (4000, 4150)
        assert Decimal(target["judge_cost"]) == 50 * JUDGE_COST
        assert target["scores"]["exact_match"] == {"mean": 1.0 if right else 0.0, "n": 50}
        assert target["scores"]["judge"] == {"mean": 1.0 if right else 0.25, "n": 50}
    assert summary["total"]["total_tokens"] == 3500 and Decimal(summary["total"]["cost"]) == 100 * TARGET_COST
    assert summary["total"]["judge_total_tokens"] == 8300
    assert Decimal(summary["total"]["judge_cost"]) == 100 * JUDGE_COST
    # The same figures read from the runs themselves: 100 target runs, 100 judge runs, each its own.
    assert runs["target"] == {"runs": 100, "total_tokens": 3500, "cost": f"{100 * TARGET_COST:.8f}", "failed": 0}
    assert runs["judge"] == {"runs": 100, "total_tokens": 8300, "cost": f"{100 * JUDGE_COST:.8f}", "failed": 0}
    judge_runs = WorkflowExecution.objects.filter(experiment_run__role="judge")
    assert {(r.model, r.total_tokens, r.cost) for r in judge_runs} == {(JUDGE_MODEL, 83, JUDGE_COST)}
    for result in ExperimentResult.objects.select_related("execution"):
        assert result.execution.prompt_version.version == (1 if result.target == "v1" else 2)
        judge = result.runs.get(role="judge").execution
        assert (result.judge_total_tokens, result.judge_cost) == (judge.total_tokens, judge.cost)
        assert not Score.objects.filter(execution=judge).exists()  # the judge's verdicts score the target's run
        assert Score.objects.get(execution=result.execution, name="judge").comment == judge.output_data["content"]
    assert WorkflowExecution.objects.count() == 200
    call_command("reconcile_aggregates", stdout=StringIO())  # exit 1 (SystemExit) on any drift


def test_a_budget_stops_it_cleanly_and_a_resume_with_more_goes_on(api, alice, support, openai_server):
    dataset = dataset_of(alice, 10)
    for _ in range(10):
        openai_server.reply(content="ok", usage=TARGET_USAGE)
    body = versions_body(dataset, budget=str(3 * TARGET_COST))
    body["targets"] = body["targets"][:1]

    experiment = api.post(URL, body, format="json").json()

    assert experiment["status"] == "budget_spent"
    assert experiment["stop_reason"] == f"budget of ${3 * TARGET_COST:.8f} spent (${3 * TARGET_COST:.8f})"
    assert experiment["progress"]["done"] == 3 and len(openai_server.requests) == 3
    assert WorkflowExecution.objects.count() == ExperimentResult.objects.count() == 3  # no item half-written
    assert api.post(f"{URL}{experiment['id']}/cancel/").status_code == 409

    resumed = api.post(f"{URL}{experiment['id']}/resume/", {"budget": "1"}, format="json").json()

    assert resumed["status"] == "completed" and resumed["progress"]["done"] == 10
    assert len(openai_server.requests) == WorkflowExecution.objects.count() == 10
    assert Decimal(resumed["runs"]["target"]["cost"]) == 10 * TARGET_COST
    call_command("reconcile_aggregates", stdout=StringIO())


def test_cancel_and_resume_run_every_item_once(api, alice, support, openai_server):
    dataset = dataset_of(alice, 12)
    for _ in range(24):
        openai_server.reply(content="ok", usage=TARGET_USAGE, delay_s=0.15)
    started: dict = {}

    def start() -> None:  # the POST runs the experiment (django-q2 runs tasks inline in tests)
        client = APIClient()
        client.force_login(alice)
        try:
            started["response"] = client.post(URL, versions_body(dataset, concurrency=3), format="json")
        finally:
            connection.close()

    thread = threading.Thread(target=start)
    thread.start()
    deadline = time.monotonic() + 30
    while ExperimentResult.objects.count() < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    experiment_id = ExperimentResult.objects.values_list("experiment_id", flat=True).first()
    cancelling = api.post(f"{URL}{experiment_id}/cancel/").json()
    thread.join(60)

    assert cancelling["cancel_requested"] is True
    cancelled = api.get(f"{URL}{experiment_id}/").json()
    assert cancelled["status"] == "cancelled" and cancelled["stop_reason"] == "cancelled"
    done = cancelled["progress"]["done"]
    assert 4 <= done < 24
    assert WorkflowExecution.objects.count() == ExperimentRun.objects.count() == done  # the items under way finished

    resumed = api.post(f"{URL}{experiment_id}/resume/", {}, format="json").json()

    assert resumed["status"] == "completed" and resumed["progress"] == {**resumed["progress"], "done": 24}
    pairs = list(ExperimentResult.objects.values_list("target", "item_id"))
    assert len(pairs) == len(set(pairs)) == 24
    assert len(openai_server.requests) == WorkflowExecution.objects.count() == ExperimentRun.objects.count() == 24
    assert api.post(f"{URL}{experiment_id}/resume/", {}, format="json").status_code == 409
    call_command("reconcile_aggregates", stdout=StringIO())


def test_a_judge_from_a_stored_prompt_sees_the_output_and_a_failed_judge_is_still_accounted(api, alice, support,
                                                                                             openai_server):
    from tests.prompts.factories import PromptFactory

    PromptFactory(owner=alice, name="grader", labels=["production"],
                  content="Grade {{output}} against {{expected_output}}.")
    dataset = dataset_of(alice, 2)
    openai_server.reply(content="answer 0", usage=TARGET_USAGE)
    openai_server.reply(content="0.5", usage=JUDGE_USAGE)
    openai_server.reply(content="answer 1", usage=TARGET_USAGE)
    openai_server.reply(status=500)  # the second judge call fails
    body = versions_body(dataset, evaluators=[{"type": "llm_judge", "name": "graded", "prompt": {"name": "grader"},
                                               "provider": "openai", "model": JUDGE_MODEL}])
    body["targets"] = body["targets"][:1]

    experiment = api.post(URL, body, format="json").json()

    assert experiment["status"] == "completed"
    assert openai_server.requests[1].body["messages"][0] == {"role": "system",
                                                             "content": "Grade answer 0 against answer 0."}
    first, second = ExperimentResult.objects.order_by("item__created_at")
    assert first.scores == {"graded": 0.5} and first.evaluator_errors == {}
    assert second.scores == {} and list(second.evaluator_errors) == ["graded"]
    failed_judge = second.runs.get(role="judge").execution
    assert failed_judge.status == "failed"
    assert (second.judge_total_tokens, second.judge_cost) == (failed_judge.total_tokens, failed_judge.cost)
    assert experiment["runs"]["judge"]["runs"] == 2 and experiment["runs"]["judge"]["failed"] == 1
    call_command("reconcile_aggregates", stdout=StringIO())


@pytest.mark.parametrize("answer", ['{"score": NaN}', '{"score": Infinity}', '{"score": -Infinity}',
                                    '{"score": 1e999}', '{"score": 1%s}' % ("0" * 400), "a score of 1e999"])
def test_a_judge_that_answers_no_finite_score_is_the_evaluators_error_and_the_result_is_written(
        api, alice, support, openai_server, answer):
    dataset = dataset_of(alice, 2)
    for _ in range(2):
        openai_server.reply(content="answer", usage=TARGET_USAGE)
        openai_server.reply(content=answer, usage=JUDGE_USAGE)
    body = versions_body(dataset, evaluators=[{"type": "exact_match"}, {"type": "llm_judge", "name": "judge",
                                                                        "provider": "openai", "model": JUDGE_MODEL}])
    body["targets"] = body["targets"][:1]

    experiment = api.post(URL, body, format="json").json()

    assert experiment["status"] == "completed" and experiment["progress"]["done"] == 2
    results = api.get(f"{URL}{experiment['id']}/results/").json()["results"]
    assert [(r["scores"], r["evaluator_errors"]) for r in results] == [
        ({"exact_match": False}, {"judge": "the judge answered no score"})] * 2
    assert experiment["runs"]["judge"]["runs"] == 2 and not Score.objects.filter(name="judge").exists()
    call_command("reconcile_aggregates", stdout=StringIO())


def test_the_dataset_of_an_experiment_under_way_and_its_items_are_not_deleted_until_it_ends(api, alice, support,
                                                                                             openai_server):
    dataset, thread = one_target_held(alice, openai_server)
    item = dataset.items.first()

    refused = [api.delete(f"/api/v1/datasets/{dataset.pk}/"),
               api.delete(f"/api/v1/datasets/{dataset.pk}/items/{item.pk}/")]
    openai_server.release()
    thread.join(60)

    for response in refused:
        assert_error(response, 409, "dataset_in_use")
        assert "experiment 'v1 vs v2'" in response.json()["error"]["message"]
    experiment = api.get(f"{URL}{Experiment.objects.get().pk}/").json()
    assert experiment["status"] == "completed" and experiment["progress"]["done"] == 3
    assert len(openai_server.requests) == WorkflowExecution.objects.count() == ExperimentRun.objects.count() == 3
    assert api.delete(f"/api/v1/datasets/{dataset.pk}/items/{item.pk}/").status_code == 204  # once it has ended
    assert api.delete(f"/api/v1/datasets/{dataset.pk}/").status_code == 204
    assert not Experiment.objects.exists()


def test_a_result_that_cannot_be_written_ends_the_experiment_failed_saying_so(api, alice, support, openai_server):
    dataset, thread = one_target_held(alice, openai_server)
    item = dataset.items.order_by("created_at", "id").first()  # the one whose run is under way

    DatasetItem.objects.filter(pk=item.pk).delete()  # out of Chatter's hands (a database console): no check there
    openai_server.release()
    thread.join(60)

    experiment = api.get(f"{URL}{Experiment.objects.get().pk}/").json()
    assert experiment["status"] == "failed" and "IntegrityError" in experiment["stop_reason"], experiment
    assert experiment["progress"]["done"] == 0 and len(openai_server.requests) == 1  # no item started after it
    resumed = api.post(f"{URL}{experiment['id']}/resume/", {}, format="json").json()
    assert resumed["status"] == "completed" and resumed["progress"] == {**resumed["progress"], "done": 2, "total": 2}


def test_the_admin_deletes_no_dataset_or_item_an_experiment_under_way_reads(client, alice, staff, support,
                                                                            openai_server):
    dataset, thread = one_target_held(alice, openai_server)
    item = dataset.items.first()
    client.force_login(staff)

    pages = [client.post(f"/admin/datasets/dataset/{dataset.pk}/delete/", {"post": "yes"}),
             client.post(f"/admin/datasets/datasetitem/{item.pk}/delete/", {"post": "yes"})]
    bulk = [client.post(f"/admin/datasets/{model}/", {"action": "delete_selected", "_selected_action": [pk],
                                                        "post": "yes"})
            for model, pk in (("dataset", dataset.pk), ("datasetitem", item.pk))]
    openai_server.release()
    thread.join(60)

    assert [page.status_code for page in pages + bulk] == [403, 403, 403, 403]
    assert dataset.items.count() == 3 and Experiment.objects.get().status == "completed"
    assert client.post(f"/admin/datasets/datasetitem/{item.pk}/delete/", {"post": "yes"}).status_code == 302
    assert client.post(f"/admin/datasets/dataset/{dataset.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Dataset.objects.filter(pk=dataset.pk).exists()


def test_an_experiment_deleted_in_the_admin_while_it_runs_starts_no_more_items(client, alice, staff, support,
                                                                                openai_server):
    _, thread = one_target_held(alice, openai_server)
    client.force_login(staff)

    deleted = client.post(f"/admin/experiments/experiment/{Experiment.objects.get().pk}/delete/", {"post": "yes"})
    openai_server.release()
    thread.join(60)

    assert deleted.status_code == 302 and not Experiment.objects.exists()
    assert len(openai_server.requests) == 1  # the item under way when it went, no other
    assert not ExperimentResult.objects.exists() and not ExperimentRun.objects.exists()


def test_a_pair_refused_for_the_owners_run_limit_waits_for_a_slot_and_never_fails_for_it(api, alice, support,
                                                                                          openai_server, settings,
                                                                                          monkeypatch):
    settings.CHATTER_MAX_CONCURRENT_RUNS = 1
    # Asked again at once, so that the refusals soon outnumber the 40 retries a pair once waited before it failed.
    monkeypatch.setattr("experiments.services.BUSY_WAIT_S", 0.001)
    monkeypatch.setattr("experiments.services.BUSY_WAIT_MAX_S", 0.001, raising=False)
    other_run = WorkflowExecutionFactory(owner=alice, message="still pending")  # alice's one slot, taken
    dataset = dataset_of(alice, 2)
    openai_server.always(content="ok", usage=TARGET_USAGE)
    body = versions_body(dataset)
    body["targets"] = body["targets"][:1]
    thread = run_in_background(alice, body)
    refused_often()

    assert api.post(f"/api/v1/executions/{other_run.pk}/cancel/").status_code == 200  # the slot is free
    thread.join(60)

    experiment = api.get(f"{URL}{Experiment.objects.get().pk}/").json()
    assert AuditEvent.objects.filter(action="limit.exceeded").count() >= 100  # refused, and refused again
    assert experiment["status"] == "completed", experiment["stop_reason"]
    assert experiment["progress"] == {**experiment["progress"], "done": 2, "failed": 0}
    assert len(openai_server.requests) == 2


def test_a_judge_that_gets_no_run_slot_is_asked_again_and_its_target_does_not_run_again(api, alice, support,
                                                                                         openai_server, settings,
                                                                                         monkeypatch):
    """The target's run got a slot; its judge found none till its wait ended: the pair goes on in a new task with
    the target's run it made, only the judge asked again (one target run, one model call paid for it)."""
    settings.CHATTER_MAX_CONCURRENT_RUNS = 2
    monkeypatch.setattr("experiments.tasks.SLICE_S", 0)
    monkeypatch.setattr("experiments.services.BUSY_WAIT_MIN_S", 0.5)  # how long a task's run waits for a slot
    monkeypatch.setattr("experiments.services.BUSY_WAIT_S", 0.01)
    monkeypatch.setattr("experiments.services.BUSY_WAIT_MAX_S", 0.01)
    openai_server.reply(content="answer 0", usage=TARGET_USAGE, hold=True)
    openai_server.always(content='{"score": 1}', usage=JUDGE_USAGE, model=JUDGE_MODEL)
    body = versions_body(dataset_of(alice, 1), evaluators=[
        {"type": "llm_judge", "name": "judge", "provider": "openai", "model": JUDGE_MODEL}])
    body["targets"] = body["targets"][:1]
    thread = run_in_background(alice, body)
    first_call_held(openai_server)
    other_run = WorkflowExecutionFactory(owner=alice, message="still pending")
    settings.CHATTER_MAX_CONCURRENT_RUNS = 1  # alice's one slot, taken: the judge's
    timeout_s, settings.CHATTER_EXECUTION_TIMEOUT_S = settings.CHATTER_EXECUTION_TIMEOUT_S, 1  # (the target's run
    openai_server.release()                                    # has its own: it began) a judge waited this long once
    deadline = time.monotonic() + 30  # until the judge's wait has ended (its pair's runs kept), or long enough
    while not ExperimentRun.objects.filter(result__isnull=True).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    settings.CHATTER_EXECUTION_TIMEOUT_S = timeout_s  # the judge's run, once it has a slot

    assert api.post(f"/api/v1/executions/{other_run.pk}/cancel/").status_code == 200  # the slot is free
    thread.join(60)

    experiment = api.get(f"{URL}{Experiment.objects.get().pk}/").json()
    assert experiment["status"] == "completed", experiment["stop_reason"]
    assert experiment["progress"] == {**experiment["progress"], "done": 1, "failed": 0}
    assert [r.body["model"] for r in openai_server.requests] == ["gpt-4o-mini", JUDGE_MODEL]
    assert experiment["runs"]["target"] == {"runs": 1, "total_tokens": 35, "cost": f"{TARGET_COST:.8f}", "failed": 0}
    result = ExperimentResult.objects.get()
    assert result.scores == {"judge": 1} and result.judge_cost == JUDGE_COST
    assert not ExperimentRun.objects.filter(result__isnull=True).exists()
    call_command("reconcile_aggregates", stdout=StringIO())


def test_an_experiment_runs_the_items_its_dataset_had_when_it_started_and_counts_those(api, alice, support,
                                                                                      openai_server):
    dataset, thread = one_target_held(alice, openai_server)

    added = api.post(f"/api/v1/datasets/{dataset.pk}/items/", {"input": "added while it ran"}, format="json")
    assert added.status_code == 201
    during = api.get(f"{URL}{Experiment.objects.get().pk}/").json()["progress"]
    openai_server.release()
    thread.join(60)

    experiment = api.get(f"{URL}{Experiment.objects.get().pk}/").json()
    assert during["total"] == 3 and during["waiting_for"].endswith("pair 1 of 3 (a run each)")
    assert experiment["status"] == "completed"
    assert experiment["progress"] == {**experiment["progress"], "done": 3, "total": 3}
    assert [e["progress"]["total"] for e in api.get(URL).json()["results"]] == [3]  # the list counts the same
    assert not ExperimentResult.objects.filter(item_id=added.json()["id"]).exists()
    assert len(openai_server.requests) == 3

    body = versions_body(dataset)
    body["targets"] = body["targets"][:1]
    again = api.post(URL, body, format="json").json()  # a new experiment runs every item the dataset has now
    assert again["status"] == "completed" and again["progress"] == {**again["progress"], "done": 4, "total": 4}
