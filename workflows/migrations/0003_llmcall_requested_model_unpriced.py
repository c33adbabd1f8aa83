from django.db import migrations, models


def requested_is_reported(apps, schema_editor):
    """Calls made before the requested model was kept: the reported name is the best there is."""
    LLMCall = apps.get_model("workflows", "LLMCall")
    LLMCall.objects.update(requested_model=models.F("model"))


class Migration(migrations.Migration):

    dependencies = [
        ("workflows", "0002_execution_heartbeat"),
    ]

    operations = [
        migrations.AddField(
            model_name="llmcall",
            name="requested_model",
            field=models.CharField(default="", max_length=255),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="llmcall",
            name="unpriced",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(requested_is_reported, migrations.RunPython.noop, elidable=True),
    ]
