"""Keys made before the `tools` scope existed: one that held every scope still holds every scope (it may manage
keys, and now use the tool registry); one limited to some scopes stays limited (issue 44)."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from keys.models import ApiToken

BEFORE = [("keys", "0001_initial")]
AFTER = [("keys", "0002_tools_scope")]


@pytest.mark.django_db(transaction=True)
def test_a_key_with_every_scope_before_gains_tools_and_a_narrow_one_does_not(alice):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    try:
        OldToken = executor.loader.project_state(BEFORE).apps.get_model("keys", "ApiToken")
        OldToken.objects.create(user_id=alice.pk, digest="a" * 64, prefix="every", name="every",
                                scopes=["chat", "runs", "gateway", "read"])
        OldToken.objects.create(user_id=alice.pk, digest="b" * 64, prefix="narrow", name="narrow",
                                scopes=["chat", "read"])
        executor.loader.build_graph()
        executor.migrate(AFTER)
        NewToken = executor.loader.project_state(AFTER).apps.get_model("keys", "ApiToken")
        every, narrow = (NewToken.objects.get(name=name).scopes for name in ("every", "narrow"))
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert every == ["chat", "runs", "gateway", "read", "tools"]
    assert narrow == ["chat", "read"]


@pytest.mark.django_db(transaction=True)
def test_item_02_a_key_with_every_scope_before_gains_knowledge_and_a_narrow_one_does_not(alice):
    """Issue 45: the `knowledge` scope (collections) is new in the same way."""
    before, after = [("keys", "0002_tools_scope")], [("keys", "0003_knowledge_scope")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        OldToken = executor.loader.project_state(before).apps.get_model("keys", "ApiToken")
        OldToken.objects.create(user_id=alice.pk, digest="a" * 64, prefix="every", name="every",
                                scopes=["chat", "runs", "gateway", "read", "tools"])
        OldToken.objects.create(user_id=alice.pk, digest="b" * 64, prefix="narrow", name="narrow",
                                scopes=["read", "tools"])
        executor.loader.build_graph()
        executor.migrate(after)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert ApiToken.objects.get(name="every").scopes == ["chat", "runs", "gateway", "read", "tools", "knowledge"]
    assert ApiToken.objects.get(name="narrow").scopes == ["read", "tools"]
