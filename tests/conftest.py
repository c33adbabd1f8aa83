import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.factories import StaffFactory, UserFactory

pytest_plugins = ["tests.fixtures_openai", "tests.fixtures_server", "tests.fixtures_llama", "tests.real_components",
                  "tests.server_marker", "tests.js_clients", "tests.fixtures_mcp", "tests.db_leftovers"]


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def staff(db):
    return StaffFactory(username="root")


@pytest.fixture
def clear_of_midnight(monkeypatch):
    """The clock runs from noon UTC of today (tests.clock.from_noon): a test that reads a day, a budget period or a
    month twice (a run, then what it spent today) reads the same one, whenever CI runs it."""
    from tests.clock import from_noon

    from_noon(monkeypatch)


@pytest.fixture
def api(alice):
    """Alice, logged in with a session."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(alice)
    return client


@pytest.fixture
def bob_api(bob):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(bob)
    return client


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    # pytest-xdist tells tests apart by their ids: of tests that share one, it runs only the first.
    shared = [nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1]
    if shared:
        raise pytest.UsageError(f"{len(shared)} test ids are shared by several tests, so pytest-xdist would run one "
                                f"of each (make test's workers): {shared[:5]}")

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # What checks nothing of the database it runs on runs once, in the SQLite phase of make test.
        once = [item for item in items if item.get_closest_marker("one_database")]
        if once:
            config.hook.pytest_deselected(items=once)
            items[:] = [item for item in items if not item.get_closest_marker("one_database")]
    else:
        skip = pytest.mark.skip(reason="needs PostgreSQL (make test runs it with DATABASE_URL)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)
    heaviest_first(items)


# --- the order of modules -------------------------------------------------------------------------------------
# make test's workers take whole modules in collection order (scripts/test.sh: --dist loadfile
# --no-loadscope-reorder). The longest go first, so that a phase ends on short modules on both workers rather than
# on one long module while the other worker idles. The seconds per module are a past run's, kept in
# tests/module_seconds.tsv and written again by a run with CHATTER_MODULE_SECONDS_OUT=tests/module_seconds.tsv.
MODULE_SECONDS = Path(__file__).with_name("module_seconds.tsv")
_ran_seconds: dict[str, float] = defaultdict(float)


def heaviest_first(items) -> None:
    """Sorts `items` by module, the longest module first (each module's tests keep their order); a module the
    file does not know yet goes before every known one: it may be long."""
    seconds = {}
    if MODULE_SECONDS.exists():
        for line in MODULE_SECONDS.read_text().splitlines():
            if line and not line.startswith("#"):
                took, module = line.split("\t")
                seconds[module] = float(took)
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    order = sorted(modules, key=lambda module: -seconds.get(module, float("inf")))
    items[:] = [item for module in order for item in modules[module]]


def _test_database_leftovers_removed() -> None:
    """A SQLite test database's WAL and shared-memory files, left beside it when Django removed it while a thread's
    connection (a server's, a run's) was still open: removed once the database itself is gone."""
    from django.conf import settings

    if not settings.configured or settings.DATABASES["default"]["ENGINE"] != settings.SQLITE_ENGINE:
        return
    name = Path(settings.DATABASES["default"].get("TEST", {}).get("NAME") or "")
    if not name.name:
        return
    for suffix in ("-wal", "-shm"):
        for leftover in name.parent.glob(f"{name.name}*{suffix}"):  # (a worker's database is named <name>_gw<n>)
            if not leftover.with_name(leftover.name.removesuffix(suffix)).exists():
                leftover.unlink(missing_ok=True)


def pytest_runtest_logreport(report):
    """Adds up each module's seconds (setup, call and teardown of its tests; with workers, on the controller). A
    subtest's report is left out: its test's own report counts its time already."""
    if not isinstance(report, pytest.SubtestReport):
        _ran_seconds[report.nodeid.split("::", 1)[0]] += report.duration


def pytest_sessionfinish(session):
    _test_database_leftovers_removed()
    out = os.environ.get("CHATTER_MODULE_SECONDS_OUT")
    if out and not hasattr(session.config, "workerinput"):  # the controller, or a run without workers
        taken = sorted(_ran_seconds.items(), key=lambda kept: -kept[1])
        Path(out).write_text("# seconds\tmodule (tests/conftest.py heaviest_first)\n"
                             + "".join(f"{took:.1f}\t{module}\n" for module, took in taken))


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each async test runs on its own event loop; a Redis layer object holds loop-bound locks, so every test
    gets a new layer (servers have one loop for their lifetime and keep theirs)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_hot_reads():
    """Every test reads keys, limits and prices afresh (core.cache.hot_reads): a test's rows are rolled back or
    flushed without the signals that renew the memo, and some tests change them with a bare UPDATE. Where the version
    is in the shared cache, a new one for every process (the servers'); in the database, a flush writes a new one
    (its row made again), and this fixture, which may not reach the database, forgets this process's memo."""
    from core.cache import hot_reads

    if hot_reads.shared():
        hot_reads.renew()
    else:
        hot_reads.forget()


@pytest.fixture(scope="session", autouse=True)
def close_async_thread_connections(django_db_setup, django_db_blocker):
    """Async tests reach the database from asgiref's sync thread; close its connections before the test
    database is dropped (PostgreSQL refuses to drop a database in use). The audit chainer appends what the last
    tests queued first, while the database is still there (not at the process's exit, after it is dropped)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from audit.services import chainer

    with django_db_blocker.unblock():
        chainer.drain()

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(10)


@pytest.fixture
def run_rate(settings):
    """Sets the run throttle's rate for one test, as the settings do (REST_FRAMEWORK's DEFAULT_THROTTLE_RATES)."""
    def set_rate(rate: str) -> None:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"runs": rate}}
    return set_rate
