"""The `tools` scope (the tool registry, /api/v1/tools/) is new: a key that held every scope before it keeps holding
every scope (it may still manage keys, as it could), so it gains `tools`; a key limited to some scopes does not."""
from django.db import migrations

EVERY_SCOPE_BEFORE = {"chat", "runs", "gateway", "read"}


def tools_scope_add(apps, schema_editor):
    ApiToken = apps.get_model("keys", "ApiToken")
    for token in ApiToken.objects.all().iterator():
        if EVERY_SCOPE_BEFORE <= set(token.scopes or ()) and "tools" not in token.scopes:
            token.scopes = [*token.scopes, "tools"]
            token.save(update_fields=["scopes"])


def tools_scope_remove(apps, schema_editor):
    ApiToken = apps.get_model("keys", "ApiToken")
    for token in ApiToken.objects.all().iterator():
        if "tools" in (token.scopes or ()):
            token.scopes = [scope for scope in token.scopes if scope != "tools"]
            token.save(update_fields=["scopes"])


class Migration(migrations.Migration):
    dependencies = [("keys", "0001_initial")]

    operations = [migrations.RunPython(tools_scope_add, tools_scope_remove)]
