"""Each evaluator on outputs the OpenAI stub scripts: exact match, contains, regex, JSON-schema valid, numeric
tolerance; their verdicts are boolean scores (source `evaluator`) of the target's run."""
import pytest

from experiments.models import Experiment, ExperimentResult
from experiments.services import experiment_run
from scores.models import Score
from tests.datasets.factories import DatasetFactory, DatasetItemFactory
from tests.experiments.conftest import OPENAI
from tests.schema_host import schema_host  # noqa: F401 (a fixture)

URL = "/api/v1/experiments/"
USAGE = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
EVALUATORS = [{"type": "exact_match"}, {"type": "contains"}, {"type": "contains", "name": "polite",
                                                               "value": "PLEASE", "ignore_case": True},
              {"type": "regex", "pattern": r"\d+"},
              {"type": "json_schema", "schema": {"type": "object", "required": ["answer"]}},
              {"type": "numeric", "tolerance": 0.1}]
# (reply, expected output) → the verdicts, in EVALUATORS' order
CASES = [
    ('{"answer": 42}', "42", [False, True, False, True, True, True]),
    ("about 3.2, please", "3.14", [False, False, True, True, False, True]),
    ("yes", "yes", [True, True, False, False, False, False]),
    ("9", {"content": "9"}, [True, True, False, True, False, True]),  # an expected output taken from a run
]


@pytest.mark.django_db(transaction=True)
def test_each_evaluator_scores_the_run(api, alice, openai_server):
    dataset = DatasetFactory(owner=alice)
    for n, (reply, expected, _) in enumerate(CASES):
        DatasetItemFactory(dataset=dataset, input=f"question {n}", expected_output=expected)
        openai_server.reply(content=reply, usage=USAGE)

    created = api.post(URL, {"name": "rules", "dataset": str(dataset.pk), "evaluators": EVALUATORS,
                             "targets": [{"template": "universal_chat", "name": "chat",
                                          "config": {**OPENAI, "enable_tools": False, "enable_memory": False}}]},
                       format="json")

    assert created.status_code == 201, created.json()
    names = [e.get("name", e["type"]) for e in EVALUATORS]
    for n, (reply, _, verdicts) in enumerate(CASES):
        result = ExperimentResult.objects.get(item__input=f"question {n}")
        assert result.output == reply
        assert result.scores == dict(zip(names, verdicts)), reply
        scores = Score.objects.filter(execution=result.execution)
        assert {s.name: bool(s.value) for s in scores} == dict(zip(names, verdicts))
        assert {(s.data_type, s.source) for s in scores} == {("boolean", "evaluator")}
    summary = api.get(f"{URL}{created.json()['id']}/").json()["summary"]["targets"]["chat"]
    assert summary["scores"]["numeric"] == {"mean": 0.75, "n": 4}
    assert summary["scores"]["exact_match"] == {"mean": 0.5, "n": 4}


@pytest.mark.django_db(transaction=True)
def test_a_json_schema_ref_is_never_fetched_and_one_that_resolves_to_nothing_is_the_evaluators_error(
        api, alice, openai_server, schema_host):
    host, asked = schema_host
    dataset = DatasetFactory(owner=alice)
    DatasetItemFactory(dataset=dataset, input="question", expected_output="42")
    openai_server.reply(content='{"answer": 42}', usage=USAGE)
    body = {"name": "refs", "dataset": str(dataset.pk), "start": False,
            "targets": [{"template": "universal_chat", "config": {**OPENAI, "enable_tools": False}}]}
    refused = api.post(URL, {**body, "evaluators": [
        {"type": "json_schema", "schema": {"properties": {"answer": {"$ref": f"{host}/internal/x.json"}}}}]},
        format="json")
    assert refused.status_code == 400 and refused.json()["error"]["details"][0]["path"] == "evaluators.0.schema"
    # An experiment stored before such refs were refused runs; each such evaluator says why it gave no score.
    created = api.post(URL, {**body, "evaluators": [{"type": "exact_match"}]}, format="json").json()
    Experiment.objects.filter(pk=created["id"]).update(evaluators=[
        {"type": "json_schema", "name": "remote", "schema": {"$ref": f"{host}/internal/x.json"}},
        {"type": "json_schema", "name": "nowhere", "schema": {"$ref": "#/$defs/missing"}},
        {"type": "exact_match", "name": "exact_match"}])

    assert experiment_run(experiment_id=created["id"]).status == "completed"

    result = ExperimentResult.objects.get(experiment_id=created["id"])
    assert result.scores == {"exact_match": False}
    assert set(result.evaluator_errors) == {"remote", "nowhere"}
    assert "cannot be resolved" in result.evaluator_errors["remote"]
    assert asked == []
