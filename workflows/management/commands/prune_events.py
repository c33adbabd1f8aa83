"""`manage.py prune_events [--days N] [--batch-size N]`: delete old event logs (CHATTER_EVENT_RETENTION_DAYS:
docs/operations/configuration.md#settings)."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.errors import InvalidInput
from workflows.services.recovery import events_prune


class Command(BaseCommand):
    help = ("Delete the persisted events of runs that finished more than N days ago (default "
            "CHATTER_EVENT_RETENTION_DAYS), in batches. Totals, traces and aggregates are kept.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help=f"retention in days (default {settings.CHATTER_EVENT_RETENTION_DAYS})")
        parser.add_argument("--batch-size", type=int, default=1000, help="rows deleted per transaction")

    def handle(self, *args, days, batch_size, **options):
        try:
            deleted = events_prune(older_than_days=days, batch_size=batch_size)
        except InvalidInput as exc:
            raise CommandError(exc.message, returncode=2)
        retention = settings.CHATTER_EVENT_RETENTION_DAYS if days is None else days
        self.stdout.write(f"deleted {deleted} events of runs finished more than {retention} days ago")
