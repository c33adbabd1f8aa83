"""`manage.py sweep_executions`: the recovery sweep (docs/operations/audit.md#recovery), the same one django-q2 runs
on a schedule."""
from django.core.management.base import BaseCommand

from workflows.services.recovery import execution_sweep


class Command(BaseCommand):
    help = ("End as failed/interrupted every run whose worker died (its heartbeat stopped) or that is pending "
            "or running past its timeout (as cancelled, one its owner asked to cancel).")

    def handle(self, *args, **options):
        ended = execution_sweep()
        for execution in ended:
            self.stdout.write(f"{execution.error_type} {execution.pk}: {execution.error_message}")
        self.stdout.write(f"{len(ended)} runs interrupted")
