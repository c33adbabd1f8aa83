"""What every management command shares, whatever app it belongs to: who it acts as."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError


def cli_user(username: str | None):
    """The named user; by default the first superuser, else a local `cli` user."""
    users = get_user_model().objects
    if username:
        try:
            return users.get(username=username)
        except users.model.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
    return users.filter(is_superuser=True).order_by("pk").first() or users.get_or_create(username="cli")[0]
