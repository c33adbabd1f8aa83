"""An LLM judge on the offline `local` model (issue 43, item 22): it answers a judge's request in the judge's format,
a deterministic word-overlap grade, so every judged item gets a score, and what the judge is charged is the cost
of judgements that produced one."""
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from langchain_core.messages import HumanMessage, SystemMessage

from engine.local_model import LocalChatModel
from experiments.evaluators import judge_message
from experiments.models import ExperimentResult
from experiments.services import JUDGE_INSTRUCTIONS
from tests.datasets.factories import DatasetFactory, DatasetItemFactory
from tests.experiments.conftest import experiment_body
from tests.prompts.factories import PromptFactory

URL = "/api/v1/experiments/"


def grade(**parts) -> str:
    return LocalChatModel().invoke([SystemMessage(JUDGE_INSTRUCTIONS), HumanMessage(judge_message(**parts))]).content


def test_item_22_the_local_model_grades_a_judges_request_by_word_overlap():
    assert grade(input="What is 12*7?", expected_output="84", output="The answer: 12*7 = 84.") == '{"score": 1.0}'
    assert grade(input="Name two colours", expected_output="red and blue", output="Red.") == '{"score": 0.33}'
    assert grade(input="What is 12*7?", expected_output="", output="12 times 7") == '{"score": 0.5}'  # the input's
    assert grade(input="q", expected_output="a", output="") == '{"score": 0.0}'
    # an output holding the request's own labels is still read whole
    assert grade(input="i", expected_output="x y", output="x\n\nOutput:\ny") == '{"score": 1.0}'
    # anything else is answered as before
    assert LocalChatModel().invoke([HumanMessage("Output: 3")]).content.startswith("(local model) You said")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("judge", [{}, {"instructions": "Be strict."}, {"prompt": {"name": "grader"}}],
                         ids=["default", "instructions", "stored-prompt"])
def test_item_22_an_llm_judge_on_the_local_model_scores_every_item_and_is_charged_only_for_scores(api, alice, judge):
    PromptFactory(owner=alice, name="grader", labels=["production"], content="Grade {{output}}.")
    dataset = DatasetFactory(owner=alice, name="sums")
    for question, expected in (("What is 12*7?", "84"), ("What is 13*7?", "90")):
        DatasetItemFactory(dataset=dataset, input={"message": question}, expected_output=expected)
    body = experiment_body(dataset, evaluators=[{"type": "llm_judge", "name": "quality", **judge}])

    created = api.post(URL, body, format="json")

    assert created.status_code == 201, created.json()
    experiment = api.get(f"{URL}{created.json()['id']}/").json()
    assert experiment["status"] == "completed", experiment
    results = {r.item.expected_output: r for r in ExperimentResult.objects.select_related("item")}
    assert {expected: (r.scores, r.evaluator_errors) for expected, r in results.items()} == {
        "84": ({"quality": 1.0}, {}), "90": ({"quality": 0.0}, {})}  # the local model answers 13*7 = 91
    for result in results.values():
        judge_run = result.runs.get(role="judge").execution
        assert judge_run.status == "completed" and judge_run.output_data["content"].startswith('{"score": ')
        assert result.judge_cost == judge_run.cost > 0 and result.judge_total_tokens == judge_run.total_tokens
    assert Decimal(experiment["summary"]["total"]["judge_cost"]) == sum(r.judge_cost for r in results.values())
    assert experiment["summary"]["total"]["scores"] == {"quality": {"mean": 0.5, "n": 2}}
    call_command("reconcile_aggregates", stdout=StringIO())
