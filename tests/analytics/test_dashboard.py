"""The staff usage dashboard (/admin/analytics/usagerollup/) and the admin pages around usage: figures equal the
raw rows, deletes made in the admin keep the rollups exact, the ledger cannot be deleted there."""
import re
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation
from tests.clock import at, noon_of
from tests.analytics.usage import assert_usage_exact, totals
from tests.factories import ApiTokenFactory, BudgetFactory, GroupFactory, run_request
from workflows.models import LLMCall, NodeExecution, ToolCall, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clear_of_midnight")]

DASHBOARD = "/admin/analytics/usagerollup/"


def run(**kwargs) -> WorkflowExecution:
    return execution_run(execution_id=execution_create(run_request(**kwargs)).pk)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def runs(alice, bob):
    return [run(owner=alice, message="What is 12*7?", chat=True),
            run(owner=alice, message="What is 1+1?", chat=True, config={"max_total_tokens": 3}),
            run(owner=bob, message="hello", chat=True)]


def test_the_admin_index_links_the_dashboard(staff_client):
    response = staff_client.get(reverse("admin:index"))
    assert f'href="{DASHBOARD}"' in response.content.decode()
    assert "Usage dashboard" in response.content.decode()


def test_the_dashboard_shows_the_figures_of_the_raw_rows(staff_client, runs):
    response = staff_client.get(DASHBOARD)

    assert response.status_code == 200
    expected = totals(assert_usage_exact())
    assert response.context["totals"] == expected
    content = response.content.decode()
    assert f'data-testid="total-cost">${expected["cost"]:.8f}<' in content
    assert f'data-testid="total-tokens">{expected["total_tokens"]}<' in content
    assert f'data-testid="total-executions">{expected["executions"]}<' in content
    assert "1 failed" in content
    [model] = response.context["models"]
    assert (model["provider"], model["model"], model["n_cost"]) == ("local", "local-echo-1", expected["cost"])
    days = response.context["days"]
    assert len(days) == 30 and days[-1]["day"] == timezone.now().date()
    assert days[-1]["cost"] == sum(call.cost for call in LLMCall.objects.all())


def test_the_charts_are_inline_svg_drawn_from_the_figures(staff_client, runs):
    content = staff_client.get(DASHBOARD).content.decode()

    for name in ("cost-by-day", "tokens-by-day", "runs-by-day", "cost-by-model"):
        assert f'data-testid="chart-{name}"' in content
    # 30 days × 3 charts, one model, one key ("no key": these runs had none); no group, no budget
    assert content.count('data-testid="bar"') == 3 * 30 + 1 + 1
    assert "<script" not in content.split('id="content-main"')[1]  # no chart library
    assert not re.search(r'(src|href)="(https?:)?//', content)  # nothing from another host


def test_it_shows_one_user_and_a_date_range(staff_client, alice, runs):
    content = staff_client.get(DASHBOARD, {"owner": "alice"})
    assert content.context["totals"] == totals(assert_usage_exact(), owner_id=alice.pk)

    tomorrow = timezone.now().date() + timedelta(days=1)
    empty = staff_client.get(DASHBOARD, {"start": tomorrow, "end": tomorrow})
    assert empty.context["totals"]["cost"] == Decimal("0") and empty.context["models"] == []
    assert "no usage in this range" in empty.content.decode()


def test_the_last_day_a_date_can_be_is_shown_as_any_other(staff_client, alice, monkeypatch):
    """9999-12-31 has no next midnight: what happened on it is counted (runs, spend per deployment, tool calls) all
    the same, as the first days of the calendar are; neither is a 500."""
    clock = at(monkeypatch, noon_of(date.max))
    run(owner=alice, message="What is 12*7?", chat=True)  # (a turn that calls the calculator)
    clock["now"] = datetime.now(dt_timezone.utc)

    last = staff_client.get(DASHBOARD, {"start": "9999-12-30", "end": "9999-12-31"})
    assert last.status_code == 200
    assert last.context["totals"]["executions"] == 1
    assert [row.calls for row in last.context["tools_by_tool"]] == [1]
    first = staff_client.get(DASHBOARD, {"start": "0001-01-01", "end": "0001-01-02"})
    assert first.status_code == 200 and first.context["totals"]["executions"] == 0


@pytest.mark.parametrize(("params", "error"), [
    ({"start": "2026-11-21", "end": "2026-11-01"}, "the start is after the end"),
    ({"start": "2024-01-01", "end": "2026-01-01"}, "at most 366 days"),
    ({"owner": "nobody"}, "no such user"),
    ({"start": "soon"}, "Enter a valid date"),
])
def test_bad_filters_are_shown_not_crashed_on(staff_client, params, error):
    response = staff_client.get(DASHBOARD, params)
    assert response.status_code == 200
    assert error in response.content.decode()
    assert "totals" not in response.context


def test_only_staff_see_it(client, alice):
    client.force_login(alice)
    assert client.get(DASHBOARD).status_code == 302


def test_deleting_a_conversation_in_the_admin_keeps_the_rollups_exact(staff_client, runs):
    conversation = runs[0].conversation

    response = staff_client.post(reverse("admin:conversations_conversation_delete", args=[conversation.pk]),
                                 {"post": "yes"})

    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    rows = assert_usage_exact()
    assert totals(rows)["executions"] == 3  # the run stays, on no conversation
    assert totals(rows, conversation_id=None)["total_tokens"] == runs[0].total_tokens


def test_a_conversation_with_a_run_in_progress_cannot_be_deleted(staff_client, alice):
    pending = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))

    url = reverse("admin:conversations_conversation_delete", args=[pending.conversation_id])
    assert staff_client.post(url, {"post": "yes"}).status_code == 403
    staff_client.post(reverse("admin:conversations_conversation_changelist"), {
        "action": "delete_selected", "_selected_action": [str(pending.conversation_id)], "post": "yes"})
    assert Conversation.objects.filter(pk=pending.conversation_id).exists()
    assert_usage_exact()


def test_the_owner_of_a_conversation_cannot_be_changed(staff_client, bob, runs):
    conversation = runs[0].conversation
    staff_client.post(reverse("admin:conversations_conversation_change", args=[conversation.pk]), {
        "owner": bob.pk, "title": "moved?", "status": "active", "metadata": "{}",
        "messages-TOTAL_FORMS": 0, "messages-INITIAL_FORMS": 0})

    conversation.refresh_from_db()
    assert conversation.owner == runs[0].owner and conversation.title == "moved?"
    assert_usage_exact()


@pytest.mark.parametrize("model", [WorkflowExecution, NodeExecution, ToolCall, LLMCall])
def test_the_ledger_cannot_be_deleted_in_the_admin(staff_client, runs, model):
    row = model.objects.first()

    url = reverse(f"admin:workflows_{model._meta.model_name}_delete", args=[row.pk])
    assert staff_client.post(url, {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()
    assert_usage_exact()


def test_the_execution_page_shows_the_messages_it_saved(staff_client, runs):
    content = staff_client.get(reverse("admin:workflows_workflowexecution_change", args=[runs[0].pk])).content.decode()
    assert "Messages saved by this run" in content
    assert "What is 12*7?" in content and "84" in content


def test_the_template_list_shows_its_analytics(staff_client, runs):
    response = staff_client.get(reverse("admin:workflows_workflowtemplate_changelist"))

    assert response.status_code == 200
    [row] = [row for row in re.findall(r"<tr>.*?</tr>", response.content.decode(), re.S) if ">universal_chat<" in row]
    assert '<td class="field-runs">3</td>' in row and '<td class="field-failed_runs">1</td>' in row


def test_the_dashboard_shows_spend_by_key_and_group_and_budgets_against_their_limits(staff_client, alice, bob):
    team = GroupFactory(name="platform-team", members=[alice])
    key = ApiTokenFactory(user=alice, name="nightly-ci")
    run(owner=alice, message="hello", chat=True, api_key=key)
    run(owner=bob, message="hello", chat=True)
    BudgetFactory(owner=alice, name="alice monthly", period="month", limit_tokens=100, mode="soft")
    run(owner=alice, message="and again", chat=True)  # counted on the budget

    response = staff_client.get(DASHBOARD)

    content = response.content.decode()
    alice_runs = WorkflowExecution.objects.filter(owner=alice)
    assert 'data-testid="chart-cost-by-key"' in content and "nightly-ci: $" in content
    keyed = WorkflowExecution.objects.get(api_key=key)
    assert f"nightly-ci: ${keyed.cost:.8f}" in content
    assert f"platform-team: ${sum(r.cost for r in alice_runs):.8f}" in content
    spent = WorkflowExecution.objects.get(input_data__message="and again").total_tokens
    assert f"alice monthly (user alice, month): {spent:.1f}%" in content  # of a 100-token limit
