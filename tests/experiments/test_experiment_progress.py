"""An experiment's progress is live on the owner's websocket (/ws/events/), as any run's: every target's and
judge's run events, and an `experiment_updated` after each item and at the end."""
import asyncio
import re
import threading

import pytest
from asgiref.sync import sync_to_async

from experiments.services import experiment_create, experiment_run
from tests.analytics.test_usage_concurrency import in_thread
from tests.realtime.test_websockets import close_db_connections, connect, token_for  # noqa: F401 - a fixture too

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def pending_experiment(alice, qa):
    return experiment_create(owner=alice, name="live", dataset_id=qa.pk, start=False,
                             targets=[{"name": "chat", "template": "universal_chat"}],
                             evaluators=[{"type": "regex", "name": "any", "pattern": "."}])


def run_in_thread(experiment_id) -> threading.Thread:
    thread = threading.Thread(target=in_thread(lambda: experiment_run(experiment_id=experiment_id)))
    thread.start()
    return thread


async def test_the_owners_socket_follows_the_experiment_item_by_item(alice, bob, qa):
    experiment = await pending_experiment(alice, qa)
    mine = await connect(f"/ws/events/?token={await token_for(alice)}")
    theirs = await connect(f"/ws/events/?token={await token_for(bob)}")

    await asyncio.to_thread(run_in_thread(experiment.pk).join)
    received = []
    while not received or received[-1]["event"] != "experiment_updated" or received[-1]["data"]["status"] == "running":
        received.append(await mine.receive_json_from(timeout=10))
    nothing = await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()

    updates = [e["data"] for e in received if e["event"] == "experiment_updated"]
    assert [u["done"] for u in updates] == [1, 2, 3, 4, 4]
    assert {u["total"] for u in updates} == {4} and updates[-1]["status"] == "completed"
    assert {u["experiment_id"] for u in updates} == {str(experiment.pk)}
    assert sum(e["event"] == "workflow_completed" for e in received) == 4  # each item's run, as any run
    assert nothing


async def test_item_23_a_running_experiment_says_which_pairs_it_waits_for(alice, qa):
    experiment = await pending_experiment(alice, qa)
    mine = await connect(f"/ws/events/?token={await token_for(alice)}")

    await asyncio.to_thread(run_in_thread(experiment.pk).join)
    updates = []
    while not updates or updates[-1]["status"] == "running":
        event = await mine.receive_json_from(timeout=10)
        if event["event"] == "experiment_updated":
            updates.append(event["data"])
    await mine.disconnect()

    assert [(u["done"], u["total"], u["waiting_for"]) for u in updates] == [
        *((done, 4, f"the runs of target × item pair {done + 1} of 4 (a run each)") for done in (1, 2, 3)),
        (4, 4, "its end (every target × item pair has its result)"), (4, 4, None)]  # and the end


def test_item_23_a_pending_experiment_says_what_it_waits_for_in_the_api_and_the_admin(api, client, staff, qa):
    created = api.post("/api/v1/experiments/", {"name": "later", "dataset": str(qa.pk), "start": False,
                                                "targets": [{"template": "universal_chat"}]}, format="json").json()
    client.force_login(staff)

    detail = api.get(f"/api/v1/experiments/{created['id']}/").json()
    (listed_api,) = api.get("/api/v1/experiments/").json()["results"]
    listed = client.get("/admin/experiments/experiment/").content.decode()
    page = client.get(f"/admin/experiments/experiment/{created['id']}/change/").content.decode()
    compared = client.get(f"/admin/experiments/experiment/compare/?ids={created['id']}").content.decode()

    waiting = f"a start: it was created with \"start\": false; run it with `manage.py run_experiment {created['id']}`"
    assert detail["progress"] == {"experiment_id": created["id"], "status": "pending", "stop_reason": "", "done": 0,
                                  "failed": 0, "total": 4, "waiting_for": waiting}
    assert created["progress"] == detail["progress"] == listed_api["progress"] and detail["queued_at"] is None
    shown = f"0 of 4 done; waiting for {waiting}".replace('"', "&quot;")
    assert shown in listed and shown in page
    assert f"pending: 0 of 4 done, waiting for {waiting}".replace('"', "&quot;") in compared


def test_item_23_a_queued_experiment_says_it_waits_for_a_worker(api, qa, monkeypatch, django_capture_on_commit_callbacks):
    """Handed to the workers but picked up by none (no worker running): the answer says so."""
    queued = []
    monkeypatch.setattr("experiments.services.async_task", lambda *args, **kwargs: queued.append(args))  # no worker
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/api/v1/experiments/", {"name": "queued", "dataset": str(qa.pk),
                                                    "targets": [{"template": "universal_chat"}]}, format="json")

    progress = api.get(f"/api/v1/experiments/{created.json()['id']}/").json()["progress"]
    assert queued == [("experiments.tasks.experiment_run_task", created.json()["id"])]
    assert (progress["status"], progress["done"], progress["total"]) == ("pending", 0, 4)
    assert re.fullmatch(r"a background worker to pick it up \(queued \d+ s ago; `make run` runs a worker, or "
                        r"`manage.py qcluster`\)", progress["waiting_for"]), progress
