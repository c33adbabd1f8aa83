"""budgets/statements.py, run as budgets_matching runs them, on SQLite and PostgreSQL: the budgets a run falls
under are exactly the rule's (each scope; staff's or the owner's own; active only), read as a queryset reads them."""
import pytest
from django.db import connection
from django.db.models import Q

from budgets.models import Budget
from budgets.statements import ANY_BUDGET, BUDGETS_MATCHING, matching_params
from tests.factories import ApiTokenFactory, BudgetFactory, GroupFactory

pytestmark = pytest.mark.django_db


def _rule(owner, *, key_uid, template_id):
    """The rule, said with the ORM."""
    scoped = (Q(scope="global") | Q(scope="user", target_id=str(owner.pk))
              | Q(scope="group", target_id__in=[str(g.pk) for g in owner.groups.all()])
              | Q(scope="key", target_id=str(key_uid)) | Q(scope="template", target_id=template_id))
    return Budget.objects.filter(Q(is_active=True) & (Q(set_by_staff=True) | Q(owner=owner)) & scoped)


def _row(budget) -> dict:
    return {f.attname: getattr(budget, f.attname) for f in Budget._meta.concrete_fields}


def test_the_budgets_a_run_falls_under_are_the_rules(alice, bob, staff):
    team = GroupFactory(name="team", members=[alice])
    key = ApiTokenFactory(user=alice)
    applies = [
        BudgetFactory(owner=alice),  # her own user budget
        BudgetFactory(owner=staff, set_by_staff=True, scope="global"),
        BudgetFactory(owner=staff, set_by_staff=True, scope="group", target_id=str(team.pk)),
        BudgetFactory(owner=alice, scope="key", target_id=str(key.uid)),
        BudgetFactory(owner=staff, set_by_staff=True, scope="template", target_id="tpl-1", limit_tokens=5),
    ]
    BudgetFactory(owner=bob, scope="global")  # bob's own: never reaches alice's runs
    BudgetFactory(owner=bob, scope="user", target_id=str(alice.pk))
    BudgetFactory(owner=alice, is_active=False)
    BudgetFactory(owner=staff, set_by_staff=True, scope="template", target_id="tpl-2")
    BudgetFactory(owner=staff, set_by_staff=True, scope="group", target_id="999999")

    found = list(Budget.objects.raw(BUDGETS_MATCHING, matching_params(
        owner_id=alice.pk, api_key_uid=key.uid, template_id="tpl-1")))

    assert sorted(map(str, (b.pk for b in found))) == sorted(str(b.pk) for b in applies)
    expected = {b.pk: _row(b) for b in _rule(alice, key_uid=key.uid, template_id="tpl-1")}
    assert {b.pk: _row(b) for b in found} == expected
    # without a key or a template, their budgets do not apply
    found = Budget.objects.raw(BUDGETS_MATCHING, matching_params(owner_id=alice.pk))
    assert {b.pk for b in found} == {b.pk for b in applies[:3]}


def test_any_budget_says_whether_a_run_falls_under_any(alice, bob):
    BudgetFactory(owner=alice)
    with connection.cursor() as cursor:
        cursor.execute(ANY_BUDGET, matching_params(owner_id=bob.pk))
        assert cursor.fetchone()[0] in (False, 0)  # bob falls under none (SQLite answers 0)
        cursor.execute(ANY_BUDGET, matching_params(owner_id=alice.pk))
        assert cursor.fetchone()[0] in (True, 1)
