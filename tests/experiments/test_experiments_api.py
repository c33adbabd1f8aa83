"""/api/v1/experiments/: targets run over a dataset, each target × item an ordinary accounted run, evaluated into
scores; owner-scoped; bad input is a 400 that writes nothing."""
import re
import uuid
from io import StringIO

import pytest
from django.core.management import call_command

from experiments.models import Experiment, ExperimentResult, ExperimentRun
from prompts.models import Prompt
from scores.models import Score
from tests.api.conftest import assert_error
from tests.experiments.conftest import experiment_body
from tests.invariants import assert_all
from tests.prompts.factories import PromptFactory
from workflows.models import WorkflowExecution

URL = "/api/v1/experiments/"


@pytest.mark.django_db(transaction=True)
def test_it_runs_each_target_over_each_item_and_scores_the_runs(api, alice, qa, support):
    body = experiment_body(qa, targets=[{"prompt": {"name": "support", "version": 1}},
                                        {"prompt": {"name": "support", "label": "latest"}, "name": "newest"}],
                           evaluators=[{"type": "contains", "value": "question"}], concurrency=2)

    created = api.post(URL, body, format="json")

    assert created.status_code == 201, created.json()
    experiment = api.get(f"{URL}{created.json()['id']}/").json()
    assert experiment["status"] == "completed", experiment
    assert experiment["progress"] == {"experiment_id": experiment["id"], "status": "completed", "stop_reason": "",
                                      "done": 8, "failed": 0, "total": 8, "waiting_for": None}
    results = api.get(f"{URL}{experiment['id']}/results/?page_size=100").json()["results"]
    assert sorted((r["target"], r["item"]) for r in results) == sorted(
        (t, str(i.pk)) for t in ("support@v1", "newest") for i in qa.items.all())
    for result in results:
        run = WorkflowExecution.objects.get(pk=result["execution"])
        assert run.status == "completed" and run.prompt_version.version == (1 if result["target"] == "support@v1"
                                                                           else 2)
        assert result["total_tokens"] == run.total_tokens > 0 and result["cost"] == f"{run.cost:.8f}"
        assert result["latency_ms"] == run.execution_time_ms and result["output"] == run.output_data["content"]
        score = Score.objects.get(execution=run)
        assert (score.name, score.source, bool(score.value)) == ("contains", "evaluator", result["scores"]["contains"])
        assert_all(run)
    call_command("reconcile_aggregates", stdout=StringIO())


def test_another_users_experiment_is_a_404(api, bob_api, alice, qa):
    created = api.post(URL, experiment_body(qa, start=False), format="json")
    assert created.status_code == 201
    run_id = created.json()["id"]

    assert_error(bob_api.get(f"{URL}{run_id}/"), 404, "not_found")
    assert_error(bob_api.get(f"{URL}{run_id}/results/"), 404, "not_found")
    assert_error(bob_api.post(f"{URL}{run_id}/cancel/"), 404, "not_found")
    assert_error(bob_api.post(f"{URL}{run_id}/resume/", {}, format="json"), 404, "not_found")
    assert bob_api.get(URL).json()["count"] == 0
    assert [e["id"] for e in api.get(URL).json()["results"]] == [run_id]


def test_a_pending_experiment_keeps_its_dataset_until_it_is_cancelled(api, qa):
    experiment = api.post(URL, experiment_body(qa, start=False), format="json").json()
    item = qa.items.first()

    assert_error(api.delete(f"/api/v1/datasets/{qa.pk}/"), 409, "dataset_in_use")
    assert_error(api.delete(f"/api/v1/datasets/{qa.pk}/items/{item.pk}/"), 409, "dataset_in_use")
    assert qa.items.count() == 4 and Experiment.objects.filter(pk=experiment["id"]).exists()

    assert api.post(f"{URL}{experiment['id']}/cancel/").json()["status"] == "cancelled"
    assert api.delete(f"/api/v1/datasets/{qa.pk}/").status_code == 204
    assert not Experiment.objects.exists()


@pytest.mark.parametrize("change, field", [
    ({"dataset": "00000000-0000-0000-0000-000000000000"}, "dataset"),
    ({"targets": []}, "targets"),
    ({"targets": [{"template": "universal_chat", "prompt": {"name": "support"}}]}, "targets[0]"),
    ({"targets": [{"template": "no-such-template"}]}, "targets[0]"),
    ({"targets": [{"template": "universal_chat", "config": {"provider": "openai", "model": "gpt-unpriced"}}]},
     "targets[0]"),
    ({"targets": [{"template": "universal_chat"}, {"template": "universal_chat"}]}, "targets"),
    ({"evaluators": [{"type": "bleu"}]}, "evaluators[0].type"),
    ({"evaluators": [{"type": "regex", "pattern": "("}]}, "evaluators[0].pattern"),
    ({"evaluators": [{"type": "regex"}]}, "evaluators[0].pattern"),
    ({"evaluators": [{"type": "json_schema", "schema": {"type": 12}}]}, "evaluators[0].schema"),
    ({"evaluators": [{"type": "json_schema", "schema": {"$ref": "http://127.0.0.1:1/x.json"}}]}, "evaluators[0].schema"),
    ({"evaluators": [{"type": "exact_match", "tolerance": 1}]}, "evaluators[0].tolerance"),
    ({"evaluators": [{"type": "llm_judge", "provider": "openai", "model": "gpt-unpriced"}]}, "evaluators[0]"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": 1000}, "concurrency"),
    ({"budget": "-1"}, "budget"),
    ({"budget": "999999999999.99999999"}, "budget"),
    ({"total_tokens": 5}, "total_tokens"),
])
def test_bad_input_is_a_400_naming_it_and_writes_nothing(api, qa, change, field):
    response = api.post(URL, {**experiment_body(qa, start=False), **change}, format="json")

    details = assert_error(response, 400, "validation_error")
    paths = [re.sub(r"\.(\d+)", r"[\1]", d["path"]) for d in details]  # DRF's lists name items `targets.0`
    assert any(path == field or path.startswith(f"{field}.") for path in paths), details
    assert Experiment.objects.count() == 0


def test_an_experiment_over_someone_elses_dataset_is_refused(bob_api, qa):
    details = assert_error(bob_api.post(URL, experiment_body(qa), format="json"), 400, "validation_error")
    assert details[0]["path"] == "dataset" and Experiment.objects.count() == 0


@pytest.mark.parametrize("where, body", [
    ("targets[0]", lambda name: {"targets": [{"prompt": {"name": name, "version": 1}}]}),
    ("targets[0]", lambda name: {"targets": [{"prompt": {"name": name}}]}),
    ("evaluators[0]", lambda name: {"evaluators": [{"type": "llm_judge", "prompt": {"name": name, "version": 1}}]}),
])
def test_item_16_another_users_prompt_is_refused_at_creation_as_a_missing_one_is(api, bob, qa, where, body):
    PromptFactory(owner=bob, name="bobs", content="Bob's secret instructions.", labels=["production"])

    foreign = api.post(URL, {**experiment_body(qa, start=False), **body("bobs")}, format="json")
    Prompt.objects.filter(owner=bob).delete()
    missing = api.post(URL, {**experiment_body(qa, start=False), **body("bobs")}, format="json")

    details = assert_error(foreign, 400, "validation_error")
    assert details[0]["path"] == where
    assert foreign.json() == missing.json()
    assert Experiment.objects.count() == 0 and WorkflowExecution.objects.count() == 0


def test_item_16_a_version_or_label_the_prompt_lacks_is_refused_at_creation(api, qa, support):
    for ref in ({"name": "support", "version": 9}, {"name": "support", "label": "nope"}):
        response = api.post(URL, experiment_body(qa, targets=[{"prompt": ref}], start=False), format="json")
        assert assert_error(response, 400, "validation_error")[0]["path"] == "targets[0]"
    assert Experiment.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_definition_runs_at_its_current_version_and_an_older_one_is_refused(api, alice, qa):
    definition = api.post("/api/v1/workflows/definitions/from-template/", {"template": "summarize"},
                          format="json").json()
    target = {"definition": definition["id"], "definition_version": definition["version"]}

    stale = api.post(URL, experiment_body(qa, targets=[{**target, "definition_version": 9}]), format="json")
    created = api.post(URL, experiment_body(qa, targets=[target]), format="json").json()

    assert assert_error(stale, 400, "validation_error")[0]["path"] == "targets[0].definition_version"
    assert created["status"] == "completed" and created["progress"]["done"] == 4
    runs = WorkflowExecution.objects.filter(experiment_run__experiment_id=created["id"])
    assert {(r.definition_id, r.definition_version, r.status) for r in runs} == {
        (uuid.UUID(definition["id"]), definition["version"], "completed")}
    assert ExperimentRun.objects.filter(experiment_id=created["id"], role="target").count() == 4


@pytest.mark.django_db(transaction=True)
def test_reconcile_aggregates_checks_each_results_figures_against_its_runs_and_fixes_them(api, qa):
    created = api.post(URL, experiment_body(qa), format="json").json()
    result = ExperimentResult.objects.filter(experiment_id=created["id"]).first()
    ExperimentResult.objects.filter(pk=result.pk).update(total_tokens=result.total_tokens + 1, judge_cost="0.5")

    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("reconcile_aggregates", stdout=out, stderr=StringIO())
    call_command("reconcile_aggregates", "--fix", stdout=StringIO())

    assert f"drift experiment_result {result.pk}: " in out.getvalue()
    assert "total_tokens: stored" in out.getvalue() and "judge_cost: stored 0.50000000 != actual 0" in out.getvalue()
    fixed = ExperimentResult.objects.get(pk=result.pk)
    assert (fixed.total_tokens, fixed.judge_cost) == (result.total_tokens, 0)
    call_command("reconcile_aggregates", stdout=StringIO())
