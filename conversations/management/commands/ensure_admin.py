"""Make sure a local superuser exists: `make run` calls this on every start (docs/development.md#make-run)."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.cli import manage_command

ADMIN_USERNAME = "admin"
DEFAULT_ADMIN_URL = "http://127.0.0.1:8000/admin/"


class Command(BaseCommand):
    help = (
        "Create the superuser 'admin' with a random password, printed once, unless a superuser exists. "
        "Never sets a fixed password and never prints an existing one."
    )

    def add_arguments(self, parser):
        parser.add_argument("--url", default=DEFAULT_ADMIN_URL,
                            help="where the admin is served, for the login line (make run: its HOST and PORT)")

    def handle(self, *args, url: str, **options):
        users = get_user_model()
        existing = users.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            username = existing.get_username()
            self.stdout.write(
                f"Admin user exists ({username}); to set a new password: "
                f"{manage_command('changepassword', username)}"
            )
            return
        if users.objects.filter(**{users.USERNAME_FIELD: ADMIN_USERNAME}).exists():
            # Promoting an ordinary account behind its owner's back would be worse than stopping.
            raise CommandError(
                f"A user named '{ADMIN_USERNAME}' exists but is not a superuser; "
                f"create a superuser with: {manage_command('createsuperuser')}"
            )
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)
        self.stdout.write(f"Admin login: {url}  user: {ADMIN_USERNAME}  password: {password}")
