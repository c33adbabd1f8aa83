"""Time travel: GET /api/v1/executions/<id>/checkpoints/ (and /conversations/<id>/checkpoints/) list a
run's graph checkpoints; POST /api/v1/executions/ {"from_checkpoint": id} forks a new run from one, linked to its
parent, with accounting of its own, leaving the original run untouched."""
from io import StringIO

import pytest
from django.core.management import call_command

from tests.api.conftest import assert_error
from tests.invariants import assert_all
from workflows.models import Checkpoint, ExecutionEvent, LLMCall, NodeExecution, WorkflowExecution

pytestmark = pytest.mark.django_db
URL = "/api/v1/executions/"
TWO_CALLS = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "first", "type": "model"},
              {"id": "second", "type": "model", "config": {"system_message": "Be brief."}}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "first"}, {"source": "first", "target": "second"},
              {"source": "second", "target": "end"}],
}


def run(api, **extra) -> dict:
    """A sync run that saves its state after every step (a sync run's default is at pauses and its end)."""
    response = api.post(URL, {"graph": TWO_CALLS, "input": {"message": "hello", "variables": {"k": 1}},
                              "config": {"checkpoints": "every_step"}, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["execution"]


def everything_of(execution_id) -> tuple:
    return (list(WorkflowExecution.objects.filter(pk=execution_id).values()),
            list(ExecutionEvent.objects.filter(execution_id=execution_id).order_by("seq").values()),
            list(NodeExecution.objects.filter(execution_id=execution_id).order_by("index").values()),
            list(LLMCall.objects.filter(execution_id=execution_id).order_by("id").values()),
            list(Checkpoint.objects.filter(execution_id=execution_id).order_by("id").values("id", "checkpoint_id")))


def test_a_runs_checkpoints_are_listed_oldest_first_with_their_node_and_state(api, bob_api):
    execution = run(api)

    checkpoints = api.get(f"{URL}{execution['id']}/checkpoints/").json()

    assert [c["step"] for c in checkpoints] == list(range(-1, len(checkpoints) - 1))
    assert checkpoints[0]["source"] == "input" and checkpoints[0]["parent_checkpoint_id"] is None
    by_node = {tuple(c["nodes"]): c for c in checkpoints}
    after_first = by_node[("first",)]
    assert after_first["next"] == ["second"] and after_first["state"]["messages"] == 2  # the input and a reply
    assert after_first["state"]["variables"] == {"k": 1} and after_first["state"]["last_message"]
    assert all(c["execution_id"] == execution["id"] for c in checkpoints)
    assert_error(bob_api.get(f"{URL}{execution['id']}/checkpoints/"), 404, "not_found")


def test_a_sync_run_that_cannot_pause_saves_no_state_unless_asked_for_every_step(api):
    default = api.post(URL, {"graph": TWO_CALLS, "input": {"message": "hello"}}, format="json").json()["execution"]
    stepwise = run(api)

    assert api.get(f"{URL}{default['id']}/checkpoints/").json() == []
    every = api.get(f"{URL}{stepwise['id']}/checkpoints/").json()
    assert len(every) > 1 and every[-1]["next"] == [] and every[-1]["state"]["messages"] == 3  # to its end
    assert_error(api.post(URL, {"graph": TWO_CALLS, "input": {"message": "hello"},
                                "config": {"checkpoints": "sometimes"}}, format="json"), 400, "validation_error")


def test_a_conversations_checkpoints_are_those_of_its_runs(api, bob_api):
    first = api.post("/api/v1/chat/", {"message": "hello", "checkpoints": "every_step"}, format="json").json()
    conversation = first["conversation"]["id"]
    second = api.post("/api/v1/chat/", {"message": "again", "conversation_id": conversation,
                                        "checkpoints": "every_step"}, format="json").json()

    checkpoints = api.get(f"/api/v1/conversations/{conversation}/checkpoints/").json()

    assert {c["execution_id"] for c in checkpoints} == {first["execution"]["id"], second["execution"]["id"]}
    assert_error(bob_api.get(f"/api/v1/conversations/{conversation}/checkpoints/"), 404, "not_found")
    assert_error(api.get("/api/v1/conversations/not-a-uuid/checkpoints/"), 404, "not_found")


def test_a_fork_goes_on_from_the_checkpoint_with_accounting_of_its_own_and_leaves_the_original_untouched(api):
    parent = run(api)
    after_first = next(c for c in api.get(f"{URL}{parent['id']}/checkpoints/").json() if c["nodes"] == ["first"])
    before = everything_of(parent["id"])

    response = api.post(URL, {"from_checkpoint": after_first["checkpoint_id"]}, format="json")

    assert response.status_code == 201, response.content
    fork = response.json()["execution"]
    assert (fork["status"], fork["forked_from"], fork["forked_from_checkpoint"]) == (
        "completed", parent["id"], after_first["checkpoint_id"])
    assert fork["llm_calls"] == 1  # only `second` ran again: `first` is in the checkpoint's state
    assert fork["total_tokens"] == sum(LLMCall.objects.filter(execution_id=fork["id"]).values_list(
        "total_tokens", flat=True)) > 0
    nodes = list(NodeExecution.objects.filter(execution_id=fork["id"]).order_by("index").values_list("node_id",
                                                                                                    flat=True))
    assert nodes == ["second", "end"]
    started = ExecutionEvent.objects.get(execution_id=fork["id"], event="workflow_started")
    assert started.data["forked_from"] == {"execution_id": parent["id"], "checkpoint_id": after_first["checkpoint_id"]}
    assert everything_of(parent["id"]) == before  # the original run, its trace and its checkpoints as they were
    fork_checkpoints = api.get(f"{URL}{fork['id']}/checkpoints/").json()
    assert fork_checkpoints[0]["checkpoint_id"] == after_first["checkpoint_id"] and fork_checkpoints[0][
        "source"] == "fork"
    assert_all(WorkflowExecution.objects.get(pk=fork["id"]))
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out, stderr=out)  # exits 1 on any drift


def test_a_fork_of_someone_elses_or_an_unknown_checkpoint_is_a_404_and_bad_input_a_400(api, bob_api):
    parent = run(api)
    checkpoint = api.get(f"{URL}{parent['id']}/checkpoints/").json()[1]["checkpoint_id"]
    runs = WorkflowExecution.objects.count()

    assert_error(bob_api.post(URL, {"from_checkpoint": checkpoint}, format="json"), 404, "not_found")
    assert_error(api.post(URL, {"from_checkpoint": "nope"}, format="json"), 404, "not_found")
    assert_error(api.post(URL, {"from_checkpoint": checkpoint, "graph": TWO_CALLS}, format="json"), 400,
                 "validation_error")
    assert_error(api.post(URL, {"from_checkpoint": checkpoint, "input": {"message": "x"}}, format="json"), 400,
                 "validation_error")
    assert WorkflowExecution.objects.count() == runs
