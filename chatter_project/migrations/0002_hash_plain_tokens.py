"""DRF's tokens were stored as plain text: each becomes an ApiToken holding only the SHA-256 of its key (the key
clients hold still works), and the plain-text rows are deleted. Not reversible: the keys are no longer known."""
import hashlib

from django.db import migrations


def hash_plain_tokens(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("chatter_project", "ApiToken")
    for old in Token.objects.all().iterator():
        digest = hashlib.sha256(old.key.encode()).hexdigest()  # as keys.services.token_digest
        ApiToken.objects.create(user_id=old.user_id, digest=digest, prefix=old.key[:8])
        ApiToken.objects.filter(digest=digest).update(created_at=old.created)
    Token.objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ("chatter_project", "0001_initial"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [
        migrations.RunPython(hash_plain_tokens, migrations.RunPython.noop, elidable=False),
    ]
