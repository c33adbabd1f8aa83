"""Limits set before the API could set them came from the admin or an operator's shell: staff's."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0002_alter_keylimits_api_key'),
    ]

    operations = [
        migrations.AddField(
            model_name='keylimits',
            name='set_by_staff',
            field=models.BooleanField(default=True),
        ),
        migrations.AlterField(  # new limits: their owner's, unless staff set them
            model_name='keylimits',
            name='set_by_staff',
            field=models.BooleanField(default=False),
        ),
    ]
