"""/api/v1/experiments/: targets run over a dataset, each target × item an ordinary accounted run, evaluated into
scores; owner-scoped; bad input is a 400 that writes nothing."""
from io import StringIO

import pytest
from django.core.management import call_command

from experiments.models import Experiment, ExperimentResult, ExperimentRun
from scores.models import Score
from tests.api.conftest import assert_error
from tests.experiments.conftest import experiment_body
from tests.invariants import assert_all
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
                                      "done": 8, "failed": 0, "total": 8}
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
