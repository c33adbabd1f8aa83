"""The admin's comparison page: experiments side by side per item and in total (tokens, cost, latency, mean
scores), and the same as CSV; staff only."""
import csv
import io
from decimal import Decimal

import pytest

from experiments.services import experiment_create, experiment_run

pytestmark = pytest.mark.django_db
COMPARE = "/admin/experiments/experiment/compare/"


@pytest.fixture
def two_experiments(alice, qa, support):
    made = []
    for name, version in (("first", 1), ("second", 2)):
        experiment = experiment_create(owner=alice, name=name, dataset_id=qa.pk, start=False, concurrency=1,
                                       targets=[{"name": f"v{version}", "prompt": {"name": "support",
                                                                                   "version": version}}],
                                       evaluators=[{"type": "contains", "name": "asks", "value": "question"}])
        made.append(experiment_run(experiment_id=experiment.pk))
    return made


def test_it_shows_experiments_side_by_side_per_item_and_in_total(client, staff, two_experiments, qa):
    client.force_login(staff)
    first, second = two_experiments

    page = client.get(f"{COMPARE}?ids={first.pk},{second.pk}").content.decode()

    assert page.count('data-testid="compare-total"') == 2 and page.count('data-testid="compare-item"') == 4
    assert page.count('data-testid="compare-cell"') == 8
    for experiment in two_experiments:
        results = list(experiment.results.all())
        total_tokens = sum(r.total_tokens for r in results)
        cost = sum((r.cost for r in results), Decimal("0"))
        assert f'data-experiment-id="{experiment.pk}"' in page
        assert f'<td class="num" data-testid="total-tokens">{total_tokens}</td>' in page
        assert f'<td class="num" data-testid="total-cost">${cost:.8f}</td>' in page
    assert "<th class=\"num\">asks (mean)</th>" in page


def test_it_exports_the_comparison_as_csv(client, staff, two_experiments):
    client.force_login(staff)
    first, second = two_experiments

    response = client.get(f"{COMPARE}?ids={first.pk},{second.pk}&format=csv")

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    items = [row for row in rows if row["item"] != "total"]
    assert len(items) == 8 and {row["target"] for row in items} == {"v1", "v2"}
    for row in items:
        result = (first if row["experiment"] == "first" else second).results.get(item_id=row["item"])
        assert (row["output"], int(row["total_tokens"]), Decimal(row["cost"])) == (
            result.output, result.total_tokens, result.cost)
        assert row["score:asks"] == ("true" if result.scores["asks"] else "false")
    totals = [row for row in rows if row["item"] == "total"]
    assert [t["experiment"] for t in totals] == ["first", "second"]
    assert int(totals[0]["total_tokens"]) == sum(r.total_tokens for r in first.results.all())


def test_item_14_the_csv_writes_formulas_as_text(client, staff, two_experiments, qa):
    first, second = two_experiments
    type(first).objects.filter(pk=first.pk).update(name="=HYPERLINK(\"http://evil.example\")")
    qa.items.filter(pk=qa.items.order_by("created_at", "id")[0].pk).update(input="@SUM(1+1)*cmd|' /C calc'!A0",
                                                                            expected_output="+1")
    first.results.update(output="-2+3")
    client.force_login(staff)

    response = client.get(f"{COMPARE}?ids={first.pk},{second.pk}&format=csv")

    rows = list(csv.reader(io.StringIO(response.content.decode(), newline="")))
    formulas = [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert not formulas, formulas
    cells = {cell for row in rows for cell in row}
    assert {"'=HYPERLINK(\"http://evil.example\")", "'@SUM(1+1)*cmd|' /C calc'!A0", "'+1", "'-2+3"} <= cells


def test_it_is_for_staff_only(client, alice, two_experiments):
    client.force_login(alice)
    response = client.get(f"{COMPARE}?ids={two_experiments[0].pk}")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_list_action_opens_the_comparison(client, staff, two_experiments):
    client.force_login(staff)
    response = client.post("/admin/experiments/experiment/", {
        "action": "compare", "_selected_action": [str(e.pk) for e in two_experiments]})
    assert response.status_code == 302 and response["Location"].startswith(f"{COMPARE}?ids=")
    assert client.get(response["Location"]).content.decode().count('data-testid="compare-total"') == 2
