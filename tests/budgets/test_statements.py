"""budgets/statements.py, run as budgets_matching runs them, on SQLite and PostgreSQL: the budgets a run falls
under are exactly the rule's (each scope; staff's or the owner's own; active only), read as a queryset reads them;
on PostgreSQL the owner's row is locked by the statement that says whether any applies."""
import pytest
from django.db import connection, transaction
from django.db.models import Q

from budgets.models import Budget
from budgets.statements import BUDGETS_MATCHING, OWNER_LOCK_ANY_BUDGET, matching_params
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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_the_owner_is_locked_by_the_statement_that_says_whether_any_applies(alice, bob):
    BudgetFactory(owner=alice)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(OWNER_LOCK_ANY_BUDGET, [*matching_params(owner_id=bob.pk), bob.pk])
        assert cursor.fetchone() == (False,)  # bob falls under none
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(OWNER_LOCK_ANY_BUDGET, [*matching_params(owner_id=alice.pk), alice.pk])
        assert cursor.fetchone() == (True,)
        assert _locked_elsewhere(alice.pk) and not _locked_elsewhere(bob.pk)


def _locked_elsewhere(user_id) -> bool:
    """Whether another connection (another thread's) finds the user's row locked against its own FOR UPDATE."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth import get_user_model
    from django.db import DatabaseError, connections

    def try_lock() -> bool:
        try:
            with transaction.atomic():
                list(get_user_model().objects.select_for_update(nowait=True).filter(pk=user_id))
            return False
        except DatabaseError:
            return True
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(try_lock).result()
