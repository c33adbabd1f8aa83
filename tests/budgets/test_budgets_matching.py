"""budgets_matching, on SQLite and PostgreSQL: the budgets a run falls under are exactly the rule's (each scope;
staff's or the owner's own; active only), read in one statement; none read while no budget is active (the memo of
core.cache.hot_reads; its version's read, in the database where no cache is shared, is not counted here)."""
import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from budgets.models import Budget
from budgets.services import budgets_matching
from core.cache import HOT_READS_VERSION, hot_reads
from tests.factories import ApiTokenFactory, BudgetFactory, GroupFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("clear_of_midnight")]


def _rule(owner, *, key_uid, template_id):
    """The rule, said another way (the owner's groups read first)."""
    scoped = (Q(scope="global") | Q(scope="user", target_id=str(owner.pk))
              | Q(scope="group", target_id__in=[str(g.pk) for g in owner.groups.all()])
              | Q(scope="key", target_id=str(key_uid)) | Q(scope="template", target_id=template_id))
    return Budget.objects.filter(Q(is_active=True) & (Q(set_by_staff=True) | Q(owner=owner)) & scoped)


def _statements(queries) -> int:
    """The statements captured, the read of the hot reads' version aside (one a request or run)."""
    return len([query for query in queries.captured_queries if query["sql"] != HOT_READS_VERSION])


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

    budgets_matching(owner=alice)  # (whether any budget is active, read once)
    with CaptureQueriesContext(connection) as queries:
        found = budgets_matching(owner=alice, api_key=key, template_id="tpl-1")
    assert _statements(queries) == 1

    assert sorted(map(str, (b.pk for b in found))) == sorted(str(b.pk) for b in applies)
    expected = {b.pk: _row(b) for b in _rule(alice, key_uid=key.uid, template_id="tpl-1")}
    assert {b.pk: _row(b) for b in found} == expected
    # without a key or a template, their budgets do not apply (nor one whose target is empty)
    BudgetFactory(owner=staff, set_by_staff=True, scope="key", target_id="")
    assert {b.pk for b in budgets_matching(owner=alice)} == {b.pk for b in applies[:3]}


def test_item_02_a_run_under_no_budget_reads_one_statement(alice, bob):
    BudgetFactory(owner=alice)
    budgets_matching(owner=bob)
    with CaptureQueriesContext(connection) as queries:
        assert budgets_matching(owner=bob) == []
    assert _statements(queries) == 1
    assert [b.owner_id for b in budgets_matching(owner=alice)] == [alice.pk]


def test_item_02_no_budget_active_no_budget_read(alice, django_capture_on_commit_callbacks):
    """While no budget is active a run reads none; a budget made is found by the next run of this process at once,
    and of every process once it commits (a new version of the memo)."""
    BudgetFactory(owner=alice, is_active=False)
    budgets_matching(owner=alice)
    with CaptureQueriesContext(connection) as queries:
        assert budgets_matching(owner=alice) == []
    assert _statements(queries) == 0
    version = hot_reads.version()
    with django_capture_on_commit_callbacks(execute=True):
        made = BudgetFactory(owner=alice)
    assert hot_reads.version() != version  # every process reads afresh
    assert [b.pk for b in budgets_matching(owner=alice)] == [made.pk]
