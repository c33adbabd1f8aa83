"""The process's memo of hot reads (core.cache.hot_reads: a key and its user, a key's limits, the prices, issue 46;
a run's template and whether any budget is active, issue 48):
each request gets rows of its own, so what one changes no other reads; and every write of those rows that sends no
signal (a bare update, bulk_create, bulk_update) renews the memo, so none leaves a process reading old rows. Each
with the memo's version in the shared cache and in the database (the default cache, a process's own)."""
import ast
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.models import ModelPrice
from budgets.models import Budget
from core.models import HotReadsVersion
from budgets.services import budget_deactivate, budgets_matching
from core.cache import HOT_READS_VERSION, RenewsHotReads, Row, hot_reads
from gateway.limits import key_limits_of, key_limits_set
from gateway.models import KeyLimits
from keys.models import ApiToken
from keys.services import api_token_get
from tests import launcher
from tests.factories import ApiTokenFactory, BudgetFactory
from tests.fixtures_server import server_env
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now
from workflows.models import WorkflowTemplate
from workflows.pricing import price_for_call
from workflows.selectors import template_get

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent
# The memo's rows, with the user model (Django's own: no queryset here).
HOT_MODELS = (ApiToken, KeyLimits, ModelPrice, WorkflowTemplate, Budget)


LOCAL_CACHE = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture(params=["cache", "database"])
def shared_cache(request, settings, tmp_path):
    """Where the memo's version is kept: in a cache every process shares (Redis where the suite has it, else files),
    or in the database (the default cache, LocMem, is a process's own)."""
    if request.param == "database":
        settings.CACHES = LOCAL_CACHE
    elif "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                       "LOCATION": str(tmp_path / "cache")}}
    hot_reads.renew()
    assert hot_reads.shared() == (request.param == "cache")
    yield request.param
    hot_reads.renew()


def _reads(function):
    """`function()`'s value and the statements it ran, the reads of the version aside (one a scope: a request, a
    run; outside any, one a hot read: test_item_48_a_scope_reads_the_version_once)."""
    with CaptureQueriesContext(connection) as queries:
        value = function()
    return value, len([query for query in queries.captured_queries if query["sql"] != HOT_READS_VERSION])


def test_item_46_hot_reads_each_request_gets_a_key_and_user_of_its_own(shared_cache, alice):
    key = ApiTokenFactory(user=alice, name="app", scopes=["gateway"]).key
    first, statements = _reads(lambda: api_token_get(key=key))
    assert statements == 1
    first.scopes.append("chat")  # what a request does to its own key and user ...
    first.name, first.user.username, first.user.is_staff = "changed", "mallory", True

    second, statements = _reads(lambda: api_token_get(key=key))
    assert statements == 0  # ... the next request's, from the memo, does not see
    assert second is not first and second.user is not first.user
    assert (second.scopes, second.name, second.user.username, second.user.is_staff) == (
        ["gateway"], "app", "alice", False)


def test_item_46_hot_reads_limits_and_prices_handed_out_are_each_callers_own(shared_cache, alice):
    token = ApiTokenFactory(user=alice, scopes=["gateway"])
    key_limits_set(api_key=token, rpm=5, allowed_models=["gpt-4o-mini"])
    mine = key_limits_of(token.pk)
    mine.allowed_models.append("gpt-4o")
    mine.rpm = 1000
    assert _reads(lambda: (key_limits_of(token.pk).rpm, key_limits_of(token.pk).allowed_models)) == (
        (5, ["gpt-4o-mini"]), 0)

    price = price_for_call(provider="openai", model="gpt-4o-mini")
    price.input_per_million = Decimal("999")
    again, statements = _reads(lambda: price_for_call(provider="openai", model="gpt-4o-mini"))
    assert statements == 0 and again.input_per_million == Decimal("0.15") and again is not price


def test_item_46_hot_reads_a_memoised_row_cannot_be_changed():
    user = get_user_model()(username="carol", is_staff=False)
    row = Row(ApiToken(user=user, name="app", scopes=["gateway"], digest="d"), related=("user",))
    with pytest.raises(AttributeError):
        row.name = "changed"
    row.scopes.append("chat")  # a copy: the row's own list is not handed out
    assert row.scopes == ["gateway"] and row.user.username == "carol"
    thawed = row.thaw()
    assert (thawed.name, thawed.scopes, thawed.user.username) == ("app", ["gateway"], "carol")


@pytest.mark.parametrize("write", ["update", "bulk_update", "bulk_create"])
def test_item_46_hot_reads_a_write_without_signals_renews_the_memo(shared_cache, alice, write,
                                                                   django_capture_on_commit_callbacks):
    token = ApiTokenFactory(user=alice, scopes=["gateway"])
    key_limits_set(api_key=token, rpm=5)
    unlimited = ApiTokenFactory(user=alice, scopes=["gateway"])
    key = token.key
    assert api_token_get(key=key).name == "" and key_limits_of(token.pk).rpm == 5
    assert key_limits_of(unlimited.pk) is None
    assert price_for_call(provider="openai", model="gpt-4o-mini").input_per_million == Decimal("0.15")
    version = hot_reads.version()
    openai_mini = ModelPrice.objects.filter(provider="openai", model_pattern__startswith="gpt-4o-mini")

    with django_capture_on_commit_callbacks(execute=True):
        if write == "update":
            ApiToken.objects.filter(pk=token.pk).update(name="renamed")
            KeyLimits.objects.filter(api_key=token).update(rpm=7)
            openai_mini.update(input_per_million=Decimal("3"))
        elif write == "bulk_update":
            ApiToken.objects.bulk_update([ApiToken(pk=token.pk, name="renamed")], ["name"])
            KeyLimits.objects.bulk_update([KeyLimits(pk=KeyLimits.objects.get().pk, rpm=7)], ["rpm"])
            prices = list(openai_mini)
            for price in prices:
                price.input_per_million = Decimal("3")
            ModelPrice.objects.bulk_update(prices, ["input_per_million"])
        else:  # a price in force later than the seeded one, and limits for a key that had none (as a seed makes them)
            ModelPrice.objects.bulk_create([ModelPrice(
                provider="openai", model_pattern="gpt-4o-mini", input_per_million=Decimal("3"),
                output_per_million=Decimal("3"), effective_from=openai_mini.get().effective_from.replace(year=2025))])
            KeyLimits.objects.bulk_create([KeyLimits(api_key=unlimited, rpm=9)])

    assert hot_reads.version() != version  # every process reads afresh at its next call
    assert price_for_call(provider="openai", model="gpt-4o-mini").input_per_million == Decimal("3")
    if write == "bulk_create":
        assert key_limits_of(unlimited.pk).rpm == 9
    else:
        assert api_token_get(key=key).name == "renamed" and key_limits_of(token.pk).rpm == 7


def test_item_46_hot_reads_a_keys_last_use_renews_nothing(shared_cache, alice, django_capture_on_commit_callbacks):
    token = ApiTokenFactory(user=alice)
    api_token_get(key=token.key)
    version = hot_reads.version()
    with django_capture_on_commit_callbacks(execute=True):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=token.created_at)
    assert hot_reads.version() == version and _reads(lambda: api_token_get(key=token.key))[1] == 0


def test_item_02_a_template_by_key_is_a_hot_read(shared_cache, alice, bob, django_capture_on_commit_callbacks):
    """Every run names its template: from the second run on it is read from the memo, each run's its own instance;
    any write of a template (made, changed by a bare update, deleted) reaches the next run."""
    shared, statements = _reads(lambda: template_get(user=alice, key_or_id="universal_chat"))
    assert statements == 1 and shared.is_builtin
    shared.graph.clear()  # what one run does to its own template ...
    shared.params["enable_memory"] = "changed"
    again, statements = _reads(lambda: template_get(user=alice, key_or_id="universal_chat"))
    assert statements == 0 and again is not shared  # ... the next run's, from the memo, does not see
    assert again.graph["nodes"] and again.params["enable_memory"] is True
    assert _reads(lambda: template_get(user=alice, key_or_id=str(again.pk)))[0].pk == again.pk  # by id as well

    version = hot_reads.version()
    with django_capture_on_commit_callbacks(execute=True):
        own = WorkflowTemplate.objects.create(key="universal_chat", owner=alice, name="mine", graph={"nodes": []})
    assert hot_reads.version() != version  # every process reads afresh at its next run
    assert template_get(user=alice, key_or_id="universal_chat").pk == own.pk  # her own now hides the built-in
    assert template_get(user=bob, key_or_id="universal_chat").pk == again.pk  # not bob's
    with django_capture_on_commit_callbacks(execute=True):
        WorkflowTemplate.objects.filter(pk=own.pk).update(name="renamed")
    assert template_get(user=alice, key_or_id="universal_chat").name == "renamed"
    with django_capture_on_commit_callbacks(execute=True):
        own.delete()
    assert template_get(user=alice, key_or_id="universal_chat").pk == again.pk


def test_item_02_a_bare_update_of_a_budget_renews_whether_any_is_active(shared_cache, alice,
                                                                        django_capture_on_commit_callbacks):
    """Whether any budget is active is memoised (budgets_matching): a budget (de)activated by a bare update, as
    budget_deactivate does, binds, or stops binding, from the next run on."""
    budget = BudgetFactory(owner=alice, is_active=False)
    assert budgets_matching(owner=alice) == []  # none active: remembered
    with django_capture_on_commit_callbacks(execute=True):
        Budget.objects.filter(pk=budget.pk).update(is_active=True)
    assert [b.pk for b in budgets_matching(owner=alice)] == [budget.pk]
    with django_capture_on_commit_callbacks(execute=True):
        budget_deactivate(budget=budget)
    assert budgets_matching(owner=alice) == []


def test_item_48_a_scope_reads_the_version_once(shared_cache, alice):
    """A request, or a run outside any (hot_reads.scope()), reads the version once for all its hot reads: where it
    is in the database, one statement (and none of the rows'); in the shared cache, none."""
    token = ApiTokenFactory(user=alice, scopes=["gateway"])
    key_limits_set(api_key=token, rpm=5)

    def call():
        return (api_token_get(key=token.key).pk, key_limits_of(token.pk).rpm, template_get(
            user=alice, key_or_id="universal_chat").key, budgets_matching(owner=alice),
            price_for_call(provider="openai", model="gpt-4o-mini").input_per_million, key_limits_of(token.pk).rpm)

    call()  # the memo filled
    with CaptureQueriesContext(connection) as queries, hot_reads.scope():
        assert call() == (token.pk, 5, "universal_chat", [], Decimal("0.15"), 5)
    assert [query["sql"] for query in queries.captured_queries] == (
        [HOT_READS_VERSION] if shared_cache == "database" else [])


def test_item_48_a_chat_turn_reads_its_template_prices_and_budgets_from_the_memo(shared_cache, alice):
    """A sync chat turn outside a request (a command; B1) reads its template, its model's prices and whether any
    budget is active from the memo, for one read of the version, wherever it is kept."""
    execution_run_now(ChatRequest(owner=alice, message="warm up"))
    with CaptureQueriesContext(connection) as queries:
        execution = execution_run_now(ChatRequest(owner=alice, message="hello"))
    assert execution.status == "completed"
    hot = [query["sql"] for query in queries.captured_queries if re.search(
        r"^SELECT .*(workflowtemplate|modelprice|budgets_budget|core_hot_reads_version)", query["sql"])]
    assert hot == ([HOT_READS_VERSION] if shared_cache == "database" else []), hot


def test_item_48_the_version_row_gone_nothing_is_kept_until_a_change(settings, alice,
                                                                       django_capture_on_commit_callbacks):
    """Without the database's version row (a flush, until its post_migrate makes it again) every hot read reads
    its rows; the next change writes the row again."""
    settings.CACHES = LOCAL_CACHE
    HotReadsVersion.objects.all().delete()
    assert hot_reads.version() is None
    template_get(user=alice, key_or_id="universal_chat")
    assert _reads(lambda: template_get(user=alice, key_or_id="universal_chat"))[1] == 1
    with django_capture_on_commit_callbacks(execute=True):
        budget_deactivate(budget=BudgetFactory(owner=alice))
    assert hot_reads.version() == HotReadsVersion.objects.get().version  # (the named statement reads the ORM's row)
    template_get(user=alice, key_or_id="universal_chat")
    assert _reads(lambda: template_get(user=alice, key_or_id="universal_chat"))[1] == 0


_ANOTHER_PROCESS = """
import sys
import django

django.setup()
from budgets.models import Budget
from gateway.limits import key_limits_set
from keys.models import ApiToken
from keys.services import api_key_revoke

revoked, limited = ApiToken.objects.get(pk=sys.argv[1]), ApiToken.objects.get(pk=sys.argv[2])
api_key_revoke(token=revoked, actor=revoked.user)  # a bare UPDATE and the keys app's signal
key_limits_set(api_key=limited, rpm=2)  # a save
Budget.objects.filter(pk=sys.argv[3]).update(is_active=True)  # a bare update (RenewsHotReads)
"""


@pytest.mark.django_db(transaction=True)
def test_item_48_a_change_made_by_another_process_is_seen_at_the_next_call(settings, alice, tmp_path):
    """With the version in the database (no shared cache), another process's change is seen at this process's next
    call, its memo notwithstanding: a key revoked there is refused, a limit lowered there holds, a budget activated
    there by a bare update binds."""
    settings.CACHES = LOCAL_CACHE
    hot_reads.renew()
    revoked, limited = ApiTokenFactory(user=alice, scopes=["gateway"]), ApiTokenFactory(user=alice, scopes=["gateway"])
    key_limits_set(api_key=limited, rpm=5)
    budget = BudgetFactory(owner=alice, is_active=False)

    def call():
        key = api_token_get(key=revoked.key)
        return key and key.pk, key_limits_of(limited.pk).rpm, [b.pk for b in budgets_matching(owner=alice)]

    call()
    assert _reads(call) == ((revoked.pk, 5, []), 0)  # from this process's memo
    env = server_env(tmp_path)
    env.pop("REDIS_URL", None)  # (its version in the database too)
    done = launcher.run([sys.executable, "-c", _ANOTHER_PROCESS, str(revoked.pk), str(limited.pk), str(budget.pk)],
                        cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert call() == (None, 2, [budget.pk])


# --- no write of the memo's rows in product code escapes the renewal ---------------------------------------------
_WRITES = {"update", "bulk_update", "bulk_create", "_update", "raw"}
_USER_NAMES = {"User", "get_user_model", "user_model", "users", "_base_manager"}
_TABLES = [model._meta.db_table for model in (*HOT_MODELS, get_user_model())]
_USER_WRITER = re.compile(
    r"(get_user_model|\bUser\b|_base_manager)[\s\S]*\.(update|bulk_update|bulk_create|_update|raw)\(")
_SQL_WRITE = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+\"?(" + "|".join(_TABLES) + r")\b", re.I)


def _product_files():
    """The project's own modules: its packages' (tests, benches and migrations aside)."""
    for package in ROOT.iterdir():
        if package.name in {"tests", "bench"} or not (package / "__init__.py").exists():
            continue
        for path in package.rglob("*.py"):
            if "migrations" not in path.parts:
                yield path, path.read_text()


def _names_in(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _unrenewed_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """A module's writes of the memo's rows that no signal or RenewsHotReads renews: a bare update or bulk write of
    users (through a name bound to the user model's rows), or SQL of its own writing one of the memo's tables."""
    nodes = list(ast.walk(tree))
    user_bound = {target.id for node in nodes if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                  and _names_in(node.value) & _USER_NAMES for target in node.targets if isinstance(target, ast.Name)}
    found = []
    for node in nodes:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _WRITES \
                and _names_in(node.func.value) & (_USER_NAMES | user_bound):
            found.append((node.lineno, ast.unparse(node)[:80]))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SQL_WRITE.search(node.value):
            found.append((node.lineno, f"SQL {node.value[:60]!r}"))
    return found


def test_item_46_hot_reads_every_write_of_the_memos_rows_renews_it():
    """The memo's models write through RenewsHotReads (their every manager), and product code writes users (Django's
    model, whose queryset is not ours) only through save() or delete(), whose signals renew the memo: no bare
    update, bulk write or SQL of its own on the user table, or on the memo's tables."""
    for model in HOT_MODELS:
        assert all(isinstance(manager.get_queryset(), RenewsHotReads) for manager in model._meta.managers), model
    found = [f"{path.relative_to(ROOT)}:{line}: {what}" for path, source in _product_files()
             if _USER_WRITER.search(source) or _SQL_WRITE.search(source)  # (parsed only where one may be)
             for line, what in _unrenewed_writes(ast.parse(source))]
    assert not found, "writes of the hot reads' rows that renew no memo (core.cache.RenewsHotReads):\n" + "\n".join(
        found)


def test_item_46_hot_reads_the_check_finds_a_bare_update_of_users():
    """The walk above sees one, and SQL of its own (its logic, on a module that has them)."""
    tree = ast.parse("from django.contrib.auth import get_user_model\n"
                     "def deactivate(pks):\n"
                     "    users = get_user_model().objects.filter(pk__in=pks)\n"
                     "    users.update(is_active=False)\n"
                     "    get_user_model().objects.bulk_update([], ['is_staff'])\n"
                     "    cursor.execute('UPDATE \"auth_user\" SET is_active = false')\n")
    assert [line for line, _ in _unrenewed_writes(tree)] == [4, 5, 6]
