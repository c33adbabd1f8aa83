from django.core.management.base import BaseCommand
from django.db import connections, transaction

from knowledge.keyword_statistics import keyword_statistics_drift, keyword_statistics_rebuild


class Command(BaseCommand):
    help = ("SQLite: check that each collection's word statistics for keyword search (chunks, characters, each "
            "term's chunks; knowledge/keyword_statistics.py) equal what its chunks say. Exit 1 on drift unless "
            "--fix recounts them from the chunks.")

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="recount the statistics from the chunks")
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        using = connections[options["database"]]
        if using.vendor != "sqlite":
            self.stdout.write("nothing kept: PostgreSQL ranks words by its own full-text search")
            return
        drift = keyword_statistics_drift(using=using)
        for line in drift[:50]:
            self.stdout.write(f"drift {line}")
        if drift and options["fix"]:
            with transaction.atomic(using=using.alias):
                keyword_statistics_rebuild(using=using)
            self.stdout.write("recounted from the chunks")
            drift = keyword_statistics_drift(using=using)
        if drift:
            self.stderr.write(f"{len(drift)} statistics drift from the chunks")
            raise SystemExit(1)
        self.stdout.write("zero drift: the keyword statistics equal what the chunks say")
