"""GET /api/v1/analytics/templates/: TemplateAnalytics (every user's runs of a template, I2) for the templates the
caller owns; staff see every template. JSON and CSV."""
import csv
import io
from decimal import Decimal

import pytest

from analytics.models import TemplateAnalytics
from tests.api.conftest import assert_error
from tests.factories import WorkflowTemplateFactory, run_request
from tests.invariants import assert_i2
from workflows.models import WorkflowExecution, WorkflowTemplate
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db

URL = "/api/v1/analytics/templates/"
LINEAR = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


def run(**kwargs) -> WorkflowExecution:
    return execution_run(execution_id=execution_create(run_request(**kwargs)).pk)


@pytest.fixture
def alices_template(alice, bob):
    template = WorkflowTemplateFactory(key="alices", name="Alice's", owner=alice, is_public=True,
                                       graph=LINEAR)
    TemplateAnalytics.objects.create(template=template)
    run(owner=alice, template="alices", message="hi")
    run(owner=bob, template="alices", message="hello")  # a public template: bob's runs count too
    run(owner=alice, template="alices", message="hi", config={"max_total_tokens": 3})
    run(owner=alice, message="What is 12*7?", chat=True)  # universal_chat, a built-in
    assert_i2()
    return template


def rows(client, **params) -> list[dict]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_the_owner_sees_the_figures_of_their_template(alice_api, alices_template):
    [row] = rows(alice_api)

    runs = WorkflowExecution.objects.filter(template=alices_template)
    assert (row["template_key"], row["template_name"]) == ("alices", "Alice's")
    assert (row["total_executions"], row["successful_executions"], row["failed_executions"]) == (3, 2, 1)
    assert row["total_tokens"] == sum(r.total_tokens for r in runs)
    assert Decimal(row["total_cost"]) == sum(r.cost for r in runs)
    assert row["average_execution_time_ms"] == sum(r.execution_time_ms for r in runs) / 3
    assert row["last_used_at"] is not None


def test_its_figures_are_the_sums_over_the_slots_its_runs_added_to(alice_api, alice, alices_template):
    for n in range(6):
        run(owner=alice, template="alices", message=f"hi {n}")

    [row] = rows(alice_api)

    ended = WorkflowExecution.objects.filter(template=alices_template)
    slots = TemplateAnalytics.objects.filter(template=alices_template)
    assert set(slots.values_list("slot", flat=True)) == {0} | {TemplateAnalytics.slot_of(r.pk) for r in ended}
    assert row["total_executions"] == ended.count() == 9
    assert row["total_tokens"] == sum(r.total_tokens for r in ended)
    assert Decimal(row["total_cost"]) == sum(r.cost for r in ended)
    assert_i2()


def test_other_users_never_see_it_nor_the_built_ins(bob_api, alices_template):
    assert rows(bob_api) == []


def test_staff_see_every_template(staff_api, alices_template):
    found = {row["template_key"]: row for row in rows(staff_api)}

    assert set(found) == set(WorkflowTemplate.objects.values_list("key", flat=True))
    assert found["universal_chat"]["total_executions"] == 1
    assert found["alices"]["total_executions"] == 3
    ordered = [row["template_key"] for row in rows(staff_api, ordering="-total_cost")]
    costs = [Decimal(found[key]["total_cost"]) for key in ordered]
    assert costs == sorted(costs, reverse=True)


def test_a_template_that_never_ran_shows_zeros(staff_api, alices_template):
    never = next(row for row in rows(staff_api) if row["template_key"] == "summarize")

    assert not TemplateAnalytics.objects.filter(template__key="summarize").exists()  # made at its first run's end
    assert (never["total_executions"], never["failed_executions"], never["total_tokens"]) == (0, 0, 0)
    assert Decimal(never["total_cost"]) == 0
    assert never["average_execution_time_ms"] is None and never["last_used_at"] is None


def test_it_exports_csv(staff_api, alices_template):
    response = staff_api.get(URL, {"format": "csv", "page_size": 1})

    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    exported = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(exported) == WorkflowTemplate.objects.count()  # every row, not one page
    alices = next(row for row in exported if row["template_key"] == "alices")
    assert (alices["total_executions"], alices["failed_executions"]) == ("3", "1")


def test_it_needs_a_login(client):
    assert_error(client.get(URL), 401, "not_authenticated")
