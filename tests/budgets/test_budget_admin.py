"""Budgets in the admin, as a logged-in staff user sees them: the usage dashboard draws each active budget's spend in
its current period as a bar, in percent of its limit, whichever limit it has (USD or tokens), with that figure; a
budget has one limit, never both (the admin's form refuses both, saying so as the API does, and writes nothing)."""
import re
from decimal import Decimal

import pytest

from budgets.models import Budget, BudgetPeriod
from budgets.services import budget_create, period_start

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/analytics/usagerollup/"
ADD = "/admin/budgets/budget/add/"


@pytest.fixture
def staff_admin(client, staff):
    client.force_login(staff)
    return client


def budget_bars(html: str) -> list[str]:
    """The budgets chart's bars, by their titles ("<label>: <figure>")."""
    chart = re.search(r'data-testid="chart-budgets">(.*?)</svg>', html, re.S).group(1)
    return re.findall(r'<rect class="bar" data-testid="bar"[^>]*><title>(.*?)</title></rect>', chart)


@pytest.mark.usefixtures("clear_of_midnight")  # the day's and the month's periods written are those the page reads
def test_the_dashboard_draws_each_budgets_spend_against_its_own_limit(staff_admin, staff, alice, bob):
    for target, period, limits, spent in [
            (alice, "day", {"limit_usd": Decimal("10")}, {"spent_usd": Decimal("2.5")}),
            (bob, "month", {"limit_tokens": 1000}, {"spent_tokens": 750})]:
        budget = budget_create(owner=staff, scope="user", target_id=str(target.pk), period=period,
                               timezone_name="UTC", mode="hard", **limits)
        BudgetPeriod.objects.create(budget=budget, starts_at=period_start(budget), **spent)

    response = staff_admin.get(DASHBOARD)

    assert response.status_code == 200
    # newest first; each in percent of its own limit: $2.50 of $10, 750 of 1,000 tokens
    assert budget_bars(response.content.decode()) == ["user bob (month): 75.0%", "user alice (day): 25.0%"]


def test_the_admin_refuses_a_budget_with_both_a_usd_and_a_token_limit(staff_admin, staff):
    form = {"owner": staff.pk, "name": "both", "scope": "global", "target_id": "", "period": "month",
            "timezone": "UTC", "limit_usd": "10", "limit_tokens": "1000", "mode": "hard",
            "thresholds": "[50, 80, 100]", "webhook_url": "", "is_active": "on",
            "periods-TOTAL_FORMS": "0", "periods-INITIAL_FORMS": "0", "periods-MIN_NUM_FORMS": "0",
            "periods-MAX_NUM_FORMS": "0"}

    both = staff_admin.post(ADD, form)
    usd_only = staff_admin.post(ADD, {**form, "limit_tokens": ""})

    assert both.status_code == 200  # the form again, with the error, in the API's words
    errors = re.search(r'<ul class="errorlist nonfield">(.*?)</ul>', both.content.decode(), re.S).group(1)
    assert re.findall(r"<li>(.*?)</li>", errors) == ["give limit_usd or limit_tokens (one of them)"]
    assert usd_only.status_code == 302, usd_only.content.decode()[:2000]  # the same form with one limit is saved
    assert list(Budget.objects.values_list("limit_usd", "limit_tokens")) == [(Decimal("10"), None)]


def test_the_admin_refuses_a_usd_limit_past_ten_million(staff_admin, staff):
    form = {"owner": staff.pk, "name": "big", "scope": "global", "target_id": "", "period": "month",
            "timezone": "UTC", "limit_usd": "999999999999.99999999", "limit_tokens": "", "mode": "hard",
            "thresholds": "[50, 80, 100]", "webhook_url": "", "is_active": "on",
            "periods-TOTAL_FORMS": "0", "periods-INITIAL_FORMS": "0", "periods-MIN_NUM_FORMS": "0",
            "periods-MAX_NUM_FORMS": "0"}

    response = staff_admin.post(ADD, form)

    assert response.status_code == 200 and "less than or equal to 10000000" in response.content.decode()
    assert not Budget.objects.exists()



INLINE = {"periods-TOTAL_FORMS": "0", "periods-INITIAL_FORMS": "0", "periods-MIN_NUM_FORMS": "0",
          "periods-MAX_NUM_FORMS": "0"}


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"timezone": "Bad/Zone"}, "timezone", "not an IANA time zone"),
    ({"timezone": "localtime"}, "timezone", "not an IANA time zone"),
    ({"scope": "user", "target_id": "987654"}, "target_id", "names no user you may set a budget on"),
    ({"thresholds": "[0]"}, "thresholds", "thresholds.0: Ensure this value is greater than or equal to 1."),
])
def test_the_admin_refuses_what_the_api_refuses_and_writes_nothing(staff_admin, change, field, message):
    form = {"name": "bad", "scope": "global", "target_id": "", "period": "day", "timezone": "UTC",
            "limit_usd": "10", "limit_tokens": "", "mode": "hard", "thresholds": "[50, 80, 100]", "webhook_url": "",
            "is_active": "on", **INLINE}

    response = staff_admin.post(ADD, {**form, **change})

    assert response.status_code == 200
    assert form_errors(response) == {field: [message]}
    assert not Budget.objects.exists()


def test_a_budget_added_in_the_admin_is_the_staff_members_and_binds_every_run(staff_admin, staff, alice):
    response = staff_admin.post(ADD, {
        "owner": alice.pk, "name": "alice's", "scope": "user", "target_id": str(alice.pk), "period": "day",
        "timezone": "Europe/Paris", "limit_usd": "", "limit_tokens": "1000", "mode": "hard",
        "thresholds": "[50]", "webhook_url": "", "is_active": "on", **INLINE})

    assert response.status_code == 302, form_errors(response)
    budget = Budget.objects.get()
    assert (budget.owner, budget.set_by_staff, budget.target_id, budget.timezone) == (staff, True, str(alice.pk),
                                                                                     "Europe/Paris")


def test_a_budgets_scope_target_period_and_time_zone_are_fixed_once_it_exists(staff_admin, staff, alice):
    budget = budget_create(owner=alice, scope="user", target_id=str(alice.pk), period="day", timezone_name="UTC",
                           mode="hard", limit_usd=Decimal("5"))
    BudgetPeriod.objects.create(budget=budget, starts_at=period_start(budget), spent_usd=Decimal("4"))
    change = f"/admin/budgets/budget/{budget.pk}/change/"

    page = staff_admin.get(change).content.decode()
    response = staff_admin.post(change, {
        "name": "raised", "scope": "global", "target_id": "", "period": "week", "timezone": "Pacific/Kiritimati",
        "limit_usd": "7", "limit_tokens": "", "mode": "hard", "thresholds": "[50, 80, 100]", "webhook_url": "",
        "is_active": "on", **INLINE})

    for field in ("scope", "target_id", "period", "timezone"):
        assert f'name="{field}"' not in page, field  # shown, not asked
    assert response.status_code == 302, form_errors(response)
    budget.refresh_from_db()
    assert (budget.name, budget.limit_usd) == ("raised", Decimal("7"))
    assert (budget.scope, budget.target_id, budget.period, budget.timezone) == ("user", str(alice.pk), "day", "UTC")
    assert BudgetPeriod.objects.get(budget=budget, starts_at=period_start(budget)).spent_usd == Decimal("4")
