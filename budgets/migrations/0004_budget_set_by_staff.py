from django.db import migrations, models


def staff_budgets_mark(apps, schema_editor):
    """Budgets set before now by staff keep binding everyone in their scope; any other binds its owner only."""
    Budget = apps.get_model("budgets", "Budget")
    Budget.objects.filter(owner__is_staff=True).update(set_by_staff=True)


class Migration(migrations.Migration):

    dependencies = [
        ('budgets', '0003_webhook_delivery_moved'),
    ]

    operations = [
        migrations.AddField(
            model_name='budget',
            name='set_by_staff',
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(staff_budgets_mark, migrations.RunPython.noop),
    ]
