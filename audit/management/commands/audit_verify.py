"""`manage.py audit_verify` (docs/architecture.md#i7): "OK" with the row count, or the first bad row and exit 1."""
import sys

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify
from audit.services import audit_queue_flush


class Command(BaseCommand):
    help = "Verify the audit hash chain from the first row to the last; exit 1 naming the first bad row."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000, help="rows read per query (default 1000)")

    def handle(self, *args, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be positive", returncode=2)
        audit_queue_flush()  # rows queued by runs that ended while another writer held the chain
        result = audit_chain_verify(batch_size=batch_size)
        if result.valid:
            head = f", head {result.last_hash}" if result.last_hash else ""
            self.stdout.write(f"OK: {result.checked} audit rows verified{head}")
            return
        bad = result.first_bad
        self.stderr.write(f"audit chain broken at row #{bad.id}: {bad.reason}: {bad.message}")
        sys.exit(1)
