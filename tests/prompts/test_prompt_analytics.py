"""GET /api/v1/analytics/prompts/<name>/: versions and split variants side by side. Each variant's figures are
the exact sums of its runs; each mean comes with its difference from the baseline and a 95% interval."""
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from tests.api.conftest import assert_error
from tests.invariants import assert_all
from tests.prompts.conftest import prompt_graph
from tests.prompts.factories import PromptFactory, versions_add
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db
REPORT = "/api/v1/analytics/prompts/support/"


@pytest.fixture
def split_runs(api, alice):
    """Alice's `support` split 50/50 between v1 and v2, 30 chat turns in new conversations, each scored."""
    prompt = PromptFactory(owner=alice, name="support", content="Answer.")
    versions_add(prompt, 1, text="Answer in much more detail, with examples, and then summarize the answer.")
    assert api.put("/api/v1/prompts/support/labels/production/", {"split": {"1": 50, "2": 50}},
                   format="json").status_code == 200
    definition = api.post("/api/v1/workflows/definitions/", {
        "name": "bot", **prompt_graph({"name": "support"})}, format="json").json()["id"]
    for n in range(30):
        turn = api.post("/api/v1/chat/", {"message": f"question {n}", "definition_id": definition}, format="json")
        run = turn.json()["execution"]
        version = WorkflowExecution.objects.get(pk=run["id"]).prompt_version.version
        for body in ({"name": "quality", "value": version * 0.5 + n % 2 * 0.1},
                     {"name": "helpful", "value": n % 3 != 0}, {"name": "tone", "value": ["warm", "cold"][n % 2]}):
            assert api.post("/api/v1/scores/", {**body, "execution": run["id"]}, format="json").status_code == 201
        assert_all(WorkflowExecution.objects.get(pk=run["id"]))
    return prompt


def test_each_variants_figures_are_the_sums_of_its_runs(api, split_runs):
    report = api.get(REPORT).json()

    assert [v["version"] for v in report["versions"]] == [1, 2]  # 30 fair draws: both (fails once in 5e8)
    for variant in report["versions"]:
        runs = list(WorkflowExecution.objects.filter(prompt_version__prompt=split_runs,
                                                     prompt_version__version=variant["version"]))
        assert variant["runs"] == len(runs) and variant["failed"] == 0
        for field in ("prompt_tokens", "completion_tokens", "total_tokens", "llm_calls"):
            assert variant[field] == sum(getattr(run, field) for run in runs), field
        assert Decimal(variant["cost"]) == sum(run.cost for run in runs)
        latencies = sorted(run.execution_time_ms for run in runs)
        assert variant["latency_ms"]["p50"] in latencies and variant["latency_ms"]["p95"] in latencies
        assert variant["latency_ms"]["p50"] <= variant["latency_ms"]["p95"] <= latencies[-1]
        assert variant["means"]["total_tokens"]["mean"] == pytest.approx(variant["total_tokens"] / len(runs))
        assert variant["means"]["error_rate"]["mean"] == 0
        assert variant["labels"] == (["latest"] if variant["version"] == 2 else []) + ["production (50/100)"]
        quality = [s.value for run in runs for s in run.scores.filter(name="quality")]
        assert variant["scores"]["quality"]["mean"] == pytest.approx(sum(quality) / len(quality))
        assert variant["scores"]["quality"]["n"] == len(runs)
        assert sum(variant["scores"]["tone"]["categories"].values()) == len(runs)
    assert sum(v["runs"] for v in report["versions"]) == 30
    call_command("reconcile_aggregates", stdout=StringIO())  # exit 1 (SystemExit) on any drift
    assert report["labels"][1] == {"name": "production", "version": None, "split": {"1": 50, "2": 50}}


def test_each_mean_differs_from_the_baselines_with_a_95_percent_interval(api, split_runs):
    report = api.get(f"{REPORT}?baseline=1").json()

    assert report["baseline"] == 1
    first, second = report["versions"]
    assert first["vs_baseline"] is None
    diff = second["vs_baseline"]
    expected = second["scores"]["quality"]["mean"] - first["scores"]["quality"]["mean"]
    assert diff["scores"]["quality"]["difference"] == pytest.approx(expected) == pytest.approx(0.5, abs=0.1)
    low, high = diff["scores"]["quality"]["ci95"]
    assert low < expected < high and low > 0  # v2's quality is really higher: the interval excludes 0
    tokens = diff["total_tokens"]
    assert tokens["difference"] > 0 and tokens["ci95"][0] > 0  # v2's longer prompt costs tokens on every run
    assert diff["error_rate"] == {"difference": 0.0, "ci95": [0.0, 0.0]}


def test_another_users_prompt_is_a_404_and_a_bad_baseline_a_400(api, bob_api, split_runs):
    assert_error(bob_api.get(REPORT), 404, "not_found")
    assert_error(api.get(f"{REPORT}?baseline=x"), 400, "validation_error")
    assert api.get(f"{REPORT}?baseline=9").json()["baseline"] is None


def test_a_prompt_that_never_ran_has_no_versions_to_show(api, alice):
    PromptFactory(owner=alice, name="support")

    assert api.get(REPORT).json() == {"prompt": "support", "baseline": None, "versions": [],
                                      "labels": [{"name": "latest", "version": 1, "split": {}}]}


def test_the_admins_prompt_page_compares_the_versions(api, split_runs, staff, client):
    report = api.get(REPORT).json()  # the page's baseline is the endpoint's default: the version with more runs
    other = next(row for row in report["versions"] if row["version"] != report["baseline"])
    difference = other["vs_baseline"]["scores"]["quality"]
    client.force_login(staff)

    page = client.get(f"/admin/prompts/prompt/{split_runs.pk}/change/").content.decode()

    assert "Versions compared" in page and "<th>quality (mean)</th>" in page
    assert f"v{report['baseline']} (baseline)" in page and f"<td>v{other['version']}</td>" in page
    assert "production (50/100)" in page
    assert page.count("n=") >= 4  # quality and helpful means for each version
    low, high = difference["ci95"]
    assert f"Δ {difference['difference']:+.3g} [{low:+.3g}, {high:+.3g}]" in page
