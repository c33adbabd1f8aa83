"""The budget alerts' deliveries move here from budgets (whose table 0003 drops): each row is copied with its id,
attempts and log, as a delivery about ("budget", its budget's id); retries already scheduled with django-q2 are
pointed at the task's new home."""
from django.db import migrations

FIELDS = ("id", "url", "event", "payload", "status", "attempts", "last_status_code", "last_error", "log",
          "next_attempt_at", "delivered_at")


def copy_deliveries(apps, schema_editor):
    Old = apps.get_model("budgets", "WebhookDelivery")
    New = apps.get_model("webhooks", "WebhookDelivery")
    Schedule = apps.get_model("django_q", "Schedule")
    for old in Old.objects.all().iterator():
        new = New.objects.create(subject_type="budget", subject_id=str(old.budget_id),
                                 **{field: getattr(old, field) for field in FIELDS})
        New.objects.filter(pk=new.pk).update(created_at=old.created_at)  # auto_now_add set it to now
    Schedule.objects.filter(func="budgets.tasks.webhook_deliver").update(func="webhooks.tasks.webhook_deliver")


def copy_back(apps, schema_editor):
    Old = apps.get_model("budgets", "WebhookDelivery")
    New = apps.get_model("webhooks", "WebhookDelivery")
    Schedule = apps.get_model("django_q", "Schedule")
    for new in New.objects.filter(subject_type="budget").iterator():
        Old.objects.create(budget_id=new.subject_id, **{field: getattr(new, field) for field in FIELDS})
    Schedule.objects.filter(func="webhooks.tasks.webhook_deliver").update(func="budgets.tasks.webhook_deliver")


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0001_initial"),
        ("budgets", "0002_alerts"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(copy_deliveries, copy_back)]
