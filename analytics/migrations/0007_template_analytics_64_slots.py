from django.db import migrations

SLOTS = 64  # TemplateAnalytics.SLOTS when this migration was written (was 16)
COUNTERS = ("prompt_tokens", "completion_tokens", "total_tokens")
OUTCOMES = {"completed": ("successful_executions", "last_success_at"), "failed": ("failed_executions", "last_failure_at"),
            "cancelled": ("cancelled_executions", None)}


def slots_from_runs(apps, schema_editor):
    """Each template's slots again, now 64: each the sums over the ended runs whose id picks it (the low bits of the
    id, as TemplateAnalytics.slot_of), so that a run's later re-pricing finds its figures in its own slot."""
    analytics = apps.get_model("analytics", "TemplateAnalytics")
    executions = apps.get_model("workflows", "WorkflowExecution")
    for template_id in list(analytics.objects.values_list("template_id", flat=True).distinct()):
        slots = {}
        runs = executions.objects.filter(template_id=template_id, status__in=list(OUTCOMES)).values_list(
            "pk", "status", "execution_time_ms", *COUNTERS, "cost", "completed_at")
        for pk, status, time_ms, prompt, completion, total, cost, ended in runs.iterator():
            slot = slots.setdefault(pk.int % SLOTS, analytics(template_id=template_id, slot=pk.int % SLOTS))
            outcome, moment = OUTCOMES[status]
            slot.total_executions += 1
            setattr(slot, outcome, getattr(slot, outcome) + 1)
            slot.total_execution_time_ms += time_ms or 0
            slot.prompt_tokens += prompt
            slot.completion_tokens += completion
            slot.total_tokens += total
            slot.total_cost += cost
            for name in ("last_used_at", moment):
                if name and ended and (getattr(slot, name) is None or ended > getattr(slot, name)):
                    setattr(slot, name, ended)
        analytics.objects.filter(template_id=template_id).delete()
        analytics.objects.bulk_create(slots.values())


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0006_alter_usagerollup_api_key'),
        ('workflows', '0015_schedule_graph'),
    ]

    operations = [
        migrations.RunPython(slots_from_runs, migrations.RunPython.noop),
    ]
