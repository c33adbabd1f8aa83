from importlib import import_module

from django.db import migrations

SLOTS = 256  # TemplateAnalytics.SLOTS when this migration was written (was 64)


def slots_from_runs(apps, schema_editor):
    """Each template's slots again, now 256: each the sums over the ended runs whose id picks it, as 0005 made 16."""
    import_module("analytics.migrations.0005_template_analytics_slots").slots_from_runs(apps, schema_editor,
                                                                                          count=SLOTS)


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0007_template_analytics_64_slots'),
    ]

    operations = [
        migrations.RunPython(slots_from_runs, migrations.RunPython.noop),
    ]
