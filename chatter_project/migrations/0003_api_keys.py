"""API tokens become API keys: a public id, a name, scopes, expiry, revocation and last use. Existing tokens keep
working with every scope."""
import uuid

import keys.models
from django.db import migrations, models


def give_ids(apps, schema_editor):
    ApiToken = apps.get_model("chatter_project", "ApiToken")
    for token in ApiToken.objects.filter(uid__isnull=True).iterator():
        ApiToken.objects.filter(pk=token.pk).update(uid=uuid.uuid4())


class Migration(migrations.Migration):

    dependencies = [
        ("chatter_project", "0002_hash_plain_tokens"),
    ]

    operations = [
        migrations.AddField(model_name="apitoken", name="uid", field=models.UUIDField(editable=False, null=True)),
        migrations.RunPython(give_ids, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(model_name="apitoken", name="uid",
                              field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
        migrations.AddField(model_name="apitoken", name="name",
                            field=models.CharField(blank=True, default="", max_length=100)),
        migrations.AddField(model_name="apitoken", name="scopes",
                            field=models.JSONField(default=keys.models.all_scopes)),
        migrations.AddField(model_name="apitoken", name="expires_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="apitoken", name="revoked_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="apitoken", name="last_used_at",
                            field=models.DateTimeField(blank=True, null=True)),
        migrations.AlterModelOptions(name="apitoken",
                                     options={"ordering": ["-created_at"], "verbose_name": "API key"}),
    ]
