from django.core.management.base import BaseCommand

from analytics.services import aggregates_drift, aggregates_fix


class Command(BaseCommand):
    help = ("Check that conversation totals (I1), template analytics (I2), execution totals (I3), the usage "
            "rollups and budget spend (spent and reserved per period) equal the sums of their source rows. Exit 1 on drift unless --fix repairs it (the usage "
            "rollups are then rebuilt from the source rows).")

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="recompute drifted aggregates from source rows")

    def handle(self, *args, **options):
        drift = aggregates_drift()
        for row in drift:
            fields = ", ".join(f"{name}: stored {pair[0]} != actual {pair[1]}" for name, pair in row["fields"].items())
            self.stdout.write(f"drift {row['kind']} {row['id']}: {fields}")
        if drift and options["fix"]:
            fixed = aggregates_fix()
            drift = aggregates_drift()
            self.stdout.write(f"fixed {fixed} aggregate rows")
        if drift:
            self.stderr.write(f"{len(drift)} aggregates drift from their source rows")
            raise SystemExit(1)
        self.stdout.write("zero drift: every aggregate equals the sum of its parts")
