from datetime import datetime, time, timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from analytics.services import costs_recompute
from core.errors import ChatterError


def _since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:  # (a well-formed day that does not exist, such as 2026-02-30, is a ValueError)
        moment = parse_datetime(text)
        day = parse_date(text) if moment is None else None
    except ValueError:
        moment = day = None
    if moment is None:
        if day is None:
            raise CommandError(f"--since must be a date (YYYY-MM-DD) or ISO datetime, got {text!r}")
        moment = datetime.combine(day, time.min)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class Command(BaseCommand):
    help = ("Re-price past LLM calls with the prices in force at their time (by the model each call asked for), and "
            "carry the change to every total, all in one transaction. Calls whose model had no price then keep their "
            "cost, are flagged unpriced and listed; exit 1 when there are any. An aggregate that cannot take its "
            "change (a usage rollup missing) re-prices nothing: exit 1, naming it.")

    def add_arguments(self, parser):
        parser.add_argument("--since", help="only calls at or after this date/datetime (UTC)")

    def handle(self, *args, **options):
        try:
            result = costs_recompute(since=_since(options["since"]))
        except ChatterError as exc:  # (one transaction: rolled back whole)
            raise CommandError(f"nothing was re-priced: {exc}") from exc
        self.stdout.write(f"re-priced {result.repriced} LLM calls")
        if result.tools_repriced:
            self.stdout.write(f"re-priced {result.tools_repriced} MCP tool calls")
        if result.unpriced:
            models = ", ".join(f"{model}: {count}" for model, count in result.unpriced.items())
            self.stderr.write(f"{sum(result.unpriced.values())} LLM calls have no price in force at their time "
                              f"(kept their cost, flagged unpriced; add a price and run again): {models}")
            raise SystemExit(1)
