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
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert ApiToken.objects.get(name="every").scopes == ["chat", "runs", "gateway", "read", "tools"]
    assert ApiToken.objects.get(name="narrow").scopes == ["chat", "read"]
