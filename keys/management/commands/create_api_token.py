"""A new API token for a user, printed once (only its SHA-256 is stored)."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from keys.services import api_token_create


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it: it is shown this once and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        users = get_user_model()
        user = users.objects.filter(**{users.USERNAME_FIELD: username}, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user named {username!r}")
        token, key = api_token_create(user=user)
        self.stdout.write(key)
        self.stderr.write(f"API token {token.prefix}… for {username}: shown once, store it now.")
