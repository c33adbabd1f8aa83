import pytest

from tests.factories import StaffFactory, UserFactory

pytest_plugins = ["tests.fixtures_openai", "tests.fixtures_server", "tests.fixtures_llama", "tests.real_components",
                  "tests.server_marker", "tests.js_clients", "tests.fixtures_mcp"]


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
    import os

    from django.conf import settings

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
    if os.environ.get("CHATTER_TEST_ORDER") == "modules-reversed":
        # make test's SQLite phase: the modules last to first (each module's tests in their order), so that its
        # busy stretches meet the PostgreSQL phase's waiting ones rather than the same modules' (scripts/test.sh).
        modules: dict = {}
        for item in items:
            modules.setdefault(item.path, []).append(item)
        items[:] = [item for module in reversed(modules.values()) for item in module]


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
