"""PostgreSQL: a user's limit of runs in progress (CHATTER_MAX_CONCURRENT_RUNS) is checked when the transaction
that creates a run commits, by a deferred constraint trigger (workflows.statements.RUNS_WITHIN_LIMIT), so the
owner's row is locked only inside that commit. The limit comes from the transaction's setting
`chatter.max_concurrent_runs`, made by the run's INSERT (EXECUTION_INSERT_LIMITED_AT_COMMIT); an INSERT that makes
none (data loaded by hand, fixtures) is not limited, as before. SQLite keeps its INSERT that counts first."""
from django.conf import settings
from django.db import migrations

FUNCTION = """
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    most integer := NULLIF(current_setting('chatter.max_concurrent_runs', true), '')::integer;
BEGIN
    IF most IS NULL OR NEW.status NOT IN ('pending', 'running') THEN
        RETURN NULL;
    END IF;
    -- Simultaneous commits of one user's creations take turns here; each count below, a statement of its own,
    -- sees every creation committed before it.
    PERFORM 1 FROM {users} WHERE id = NEW.owner_id FOR NO KEY UPDATE;
    IF (SELECT COUNT(*) FROM "workflows_workflowexecution"
        WHERE "owner_id" = NEW.owner_id AND "status" IN ('pending', 'running')) > most THEN
        RAISE EXCEPTION 'at most % runs at once per user', most
            USING ERRCODE = 'check_violation', CONSTRAINT = '{name}';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON "workflows_workflowexecution"
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {name}();
"""
NAME = "workflows_runs_within_limit"


def trigger_create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    users = schema_editor.quote_name(apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table)
    schema_editor.execute(FUNCTION.format(name=NAME, users=users), params=None)  # its % are PL/pgSQL's


def trigger_drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f'DROP TRIGGER IF EXISTS {NAME} ON "workflows_workflowexecution"; '
                          f"DROP FUNCTION IF EXISTS {NAME}()")


class Migration(migrations.Migration):

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("workflows", "0018_provider_attempts"),
    ]

    operations = [migrations.RunPython(trigger_create, trigger_drop, elidable=False)]
