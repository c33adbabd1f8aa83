from django.db import migrations, models
from django.db.models import F


def server_refs_set(apps, schema_editor):
    """Calls of servers still there name them in server_ref too (those of servers deleted before had lost theirs)."""
    ToolCall = apps.get_model("workflows", "ToolCall")
    ToolCall.objects.filter(server__isnull=False).update(server_ref=F("server_id"))


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0026_execution_silent_since'),
    ]

    operations = [
        migrations.AddField(
            model_name='toolcall',
            name='server_ref',
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.RunPython(server_refs_set, migrations.RunPython.noop),
    ]
