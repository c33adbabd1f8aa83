from django.core.management.base import BaseCommand

from analytics.prices import prices_seed
from workflows.services.templates import builtins_seed


class Command(BaseCommand):
    help = "Create or update the built-in templates and the seed prices (idempotent; also runs after every migrate)."

    def handle(self, *args, **options):
        builtins_seed()
        prices_seed()
        self.stdout.write("built-in templates and prices are in place")
