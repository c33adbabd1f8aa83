"""An experiment longer than a worker's task goes on in new tasks, slice by slice (a pair that got no run slot in
its task, too); one whose worker died (no result for longer than an item can take) resumes; a live one does not."""
from datetime import timedelta

import pytest
from django.utils import timezone

from django_q.models import Task

from experiments.models import Experiment
from experiments.services import experiment_create
from tests.api.conftest import assert_error
from tests.experiments.test_experiment_runs import refused_often, run_in_background
from tests.factories import WorkflowExecutionFactory

URL = "/api/v1/experiments/"


@pytest.mark.django_db(transaction=True)
def test_an_experiment_goes_on_slice_by_slice_in_new_tasks(api, alice, qa, monkeypatch):
    monkeypatch.setattr("experiments.tasks.SLICE_S", 0)  # each task starts one item, then hands over

    created = api.post(URL, {"name": "sliced", "dataset": str(qa.pk),
                             "targets": [{"template": "universal_chat"}]}, format="json").json()

    assert created["status"] == "completed" and created["progress"]["done"] == 4
    tasks = Task.objects.filter(group="experiments", func="experiments.tasks.experiment_run_task")
    # the first, then one more for each item left when a slice ended; each but the last left it pending
    assert sorted(task.result for task in tasks) == ["completed", "pending", "pending", "pending"]


@pytest.mark.django_db(transaction=True)
def test_a_pair_that_gets_no_run_slot_in_its_task_goes_on_in_a_new_task(api, alice, qa, monkeypatch, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = 1
    monkeypatch.setattr("experiments.tasks.SLICE_S", 0)  # each task waits for a slot this long (and no less than…)
    monkeypatch.setattr("experiments.services.BUSY_WAIT_MIN_S", 0.05, raising=False)
    monkeypatch.setattr("experiments.services.BUSY_WAIT_S", 0.001)
    monkeypatch.setattr("experiments.services.BUSY_WAIT_MAX_S", 0.001, raising=False)
    other_run = WorkflowExecutionFactory(owner=alice, message="still pending")  # alice's one slot, taken

    thread = run_in_background(alice, {"name": "busy", "dataset": str(qa.pk),
                                       "targets": [{"template": "universal_chat"}]})
    refused_often()
    assert api.post(f"/api/v1/executions/{other_run.pk}/cancel/").status_code == 200  # the slot is free
    thread.join(60)

    experiment = api.get(f"{URL}{Experiment.objects.get().pk}/").json()
    assert experiment["status"] == "completed"
    assert experiment["progress"] == {**experiment["progress"], "done": 4, "failed": 0}
    results = [task.result for task in Task.objects.filter(group="experiments")]
    assert results.count("completed") == 1 and results.count("pending") >= 4  # one task per item, and more


def lost(experiment: Experiment, *, minutes: int) -> None:
    Experiment.objects.filter(pk=experiment.pk).update(status="running",
                                                       heartbeat_at=timezone.now() - timedelta(minutes=minutes))


@pytest.mark.django_db
def test_a_lost_experiment_resumes_and_a_live_one_does_not(api, alice, qa, settings, django_capture_on_commit_callbacks):
    settings.CHATTER_EXECUTION_TIMEOUT_S = 60
    experiment = experiment_create(owner=alice, name="x", dataset_id=qa.pk, start=False,
                                   targets=[{"name": "chat", "template": "universal_chat"}], evaluators=[])
    lost(experiment, minutes=1)  # an item may still be under way (up to 60 s + a minute)
    assert_error(api.post(f"{URL}{experiment.pk}/resume/", {}, format="json"), 409, "not_resumable")

    lost(experiment, minutes=3)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        resumed = api.post(f"{URL}{experiment.pk}/resume/", {}, format="json")

    assert resumed.status_code == 200 and resumed.json()["status"] == "pending" and len(queued) == 1
