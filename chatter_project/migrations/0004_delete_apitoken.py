"""ApiToken is the keys app's now (keys 0001): it leaves this app's state, its table stays."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0006_alter_usagerollup_api_key'),
        ('chatter_project', '0003_api_keys'),
        ('gateway', '0002_alter_keylimits_api_key'),
        ('workflows', '0017_alter_workflowexecution_api_key'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(database_operations=[], state_operations=[
            migrations.DeleteModel(name='ApiToken')]),
    ]
