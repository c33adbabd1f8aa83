"""The API keys' table moves from chatter_project to this app as it is: the model's state only (its table,
chatter_project_apitoken, stays), and its content type (admin permissions and log entries follow it)."""

import django.db.models.deletion
import keys.models
import uuid
from django.conf import settings
from django.db import migrations, models


def _move_content_type(apps, old: str, new: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType")
    if not content_types.objects.filter(app_label=new, model="apitoken").exists():
        content_types.objects.filter(app_label=old, model="apitoken").update(app_label=new)


def content_type_moved(apps, schema_editor) -> None:
    _move_content_type(apps, "chatter_project", "keys")


def content_type_moved_back(apps, schema_editor) -> None:
    _move_content_type(apps, "keys", "chatter_project")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("chatter_project", "0003_api_keys"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(database_operations=[], state_operations=[migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('uid', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('digest', models.CharField(editable=False, max_length=64, unique=True)),
                ('prefix', models.CharField(editable=False, max_length=8)),
                ('name', models.CharField(blank=True, default='', max_length=100)),
                ('scopes', models.JSONField(default=keys.models.all_scopes)),
                ('expires_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API key',
                'db_table': 'chatter_project_apitoken',
                'ordering': ['-created_at'],
            },
        )]),
        migrations.RunPython(content_type_moved, content_type_moved_back),
    ]
