"""The `knowledge` scope (collections, their documents and search: /api/v1/collections/) is new: a key that held
every scope before it keeps holding every scope, so it gains `knowledge`; a key limited to some scopes does not."""
from django.db import migrations

EVERY_SCOPE_BEFORE = {"chat", "runs", "gateway", "read", "tools"}


def knowledge_scope_add(apps, schema_editor):
    ApiToken = apps.get_model("keys", "ApiToken")
    for token in ApiToken.objects.all().iterator():
        if EVERY_SCOPE_BEFORE <= set(token.scopes or ()) and "knowledge" not in token.scopes:
            token.scopes = [*token.scopes, "knowledge"]
            token.save(update_fields=["scopes"])


def knowledge_scope_remove(apps, schema_editor):
    ApiToken = apps.get_model("keys", "ApiToken")
    for token in ApiToken.objects.all().iterator():
        if "knowledge" in (token.scopes or ()):
            token.scopes = [scope for scope in token.scopes if scope != "knowledge"]
            token.save(update_fields=["scopes"])


class Migration(migrations.Migration):
    dependencies = [("keys", "0002_tools_scope")]

    operations = [migrations.RunPython(knowledge_scope_add, knowledge_scope_remove)]
