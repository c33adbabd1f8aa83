from datetime import datetime, time, timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from analytics.services import costs_recompute


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--since must be a date (YYYY-MM-DD) or ISO datetime, got {text!r}")
        moment = datetime.combine(day, time.min)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Command(BaseCommand):
    help = "Re-price past LLM calls with the prices in force at their time, and carry the change to every total."

    def add_arguments(self, parser):
        parser.add_argument("--since", help="only calls at or after this date/datetime (UTC)")

    def handle(self, *args, **options):
        changed = costs_recompute(since=_since(options["since"]))
        self.stdout.write(f"re-priced {changed} LLM calls")
