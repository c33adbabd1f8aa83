from django.core.management.base import BaseCommand

from workflows.services.templates import builtins_seed


class Command(BaseCommand):
    help = "Create or update the built-in templates, their analytics rows and the seed prices (idempotent)."

    def handle(self, *args, **options):
        builtins_seed()
        self.stdout.write("built-in templates and prices are in place")
