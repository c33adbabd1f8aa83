"""Money as every surface shows it (issue 43, item 23): a plain decimal to the 1e-8 dollar, never in exponent form.
A zero amount read back from SQLite is `Decimal("0E-8")`, whose str() is `0E-8`: the experiments' totals without a
judge cost exactly that, so they are what each surface is tried on."""
import csv
import io
import json
import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from core.money import dollars, usd
from experiments.services import experiment_create, experiment_run
from prompts.models import Prompt
from tests.experiments.conftest import experiment_body, qa, support  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db
EXPONENT = re.compile(r"(?<![\w-])\d+(?:\.\d+)?E[-+]\d+(?![\w-])")  # 0E-8, 1.25E-6


def test_item_23_money_helper_writes_plain_decimals():
    assert usd(Decimal("0E-8")) == "0.00000000" and dollars(Decimal("0E-8")) == "$0.00000000"
    assert usd(Decimal("1.25E-6")) == "0.00000125" and dollars("0.0000375") == "$0.00003750"
    assert dollars(Decimal("-3E-8")) == "-$0.00000003" and usd(0) == "0.00000000" and usd(None) == ""


@pytest.fixture
def judged_by_nobody(alice, qa, support):  # noqa: F811 - the fixtures imported above
    """An experiment of alice's, run, with no judge: its judge cost is a zero amount read back from the database."""
    experiment = experiment_create(owner=alice, name="no judge", dataset_id=qa.pk, start=False,
                                   targets=[{"name": "v1", "prompt": {"name": "support", "version": 1}}],
                                   evaluators=[{"type": "contains", "name": "asks", "value": "question"}])
    experiment = experiment_run(experiment_id=experiment.pk)
    assert experiment.status == "completed" and experiment.results.count() == 4
    assert str(experiment.results.first().judge_cost) in ("0E-8", "0.00000000")  # SQLite's, PostgreSQL's
    return experiment


def test_item_23_money_shows_as_plain_decimals_in_the_admin_csv_api_and_command(client, staff, api, judged_by_nobody,
                                                                                 tmp_path):
    client.force_login(staff)
    compare = f"/admin/experiments/experiment/compare/?ids={judged_by_nobody.pk}"
    page = client.get(compare).content.decode()
    exported = client.get(f"{compare}&format=csv").content.decode()
    detail = api.get(f"/api/v1/experiments/{judged_by_nobody.pk}/").json()
    runs = api.get(f"/api/v1/experiments/{judged_by_nobody.pk}/results/").json()["results"]
    dashboard = client.get("/admin/analytics/usagerollup/").content.decode()
    prompt_page = client.get(f"/admin/prompts/prompt/{Prompt.objects.get(name='support').pk}/change/")

    assert "$0.00000000" in page and not EXPONENT.search(page)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert rows and {row["judge_cost"] for row in rows} == {"0.00000000"}
    assert all(re.fullmatch(r"\d+\.\d{8}", row["cost"]) for row in rows)
    assert detail["summary"]["total"]["judge_cost"] == "0.00000000" and not EXPONENT.search(json.dumps(detail))
    assert {run["judge_cost"] for run in runs} == {"0.00000000"}
    assert not EXPONENT.search(dashboard) and "$" in dashboard
    assert prompt_page.status_code == 200 and not EXPONENT.search(prompt_page.content.decode())

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(experiment_body(judged_by_nobody.dataset, evaluators=[{"type": "regex", "pattern": "."}])))
    out = StringIO()
    call_command("run_experiment", "--file", str(spec), "--user", "alice", stdout=out)
    printed = out.getvalue()
    assert "judge $0.00000000" in printed and not EXPONENT.search(printed)
