"""The API key a row names is keys.ApiToken now: the same table, so state only."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0001_key_limits'),
        ('keys', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(database_operations=[], state_operations=[migrations.AlterField(
            model_name='keylimits',
            name='api_key',
            field=models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='gateway_limits', to='keys.apitoken'),
        )]),
    ]
