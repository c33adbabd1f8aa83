"""What every management command shares, whatever app it belongs to: who it acts as, and how to run another."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from django.conf import settings
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


def _shown_path(path: Path) -> str:
    """A path as a command line names it: relative to the current directory when it is under it."""
    absolute = Path(os.path.abspath(path))  # not resolved: a virtualenv's python is a symlink to the system's
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def manage_command(*args: str) -> str:
    """A shell command running manage.py with `args` on the Python running now (under `make run`, the virtualenv's
    `.venv/bin/python`; a bare `python` may be another one, without Django): a hint a user can paste."""
    return shlex.join([_shown_path(Path(sys.executable)), _shown_path(Path(settings.BASE_DIR) / "manage.py"), *args])
