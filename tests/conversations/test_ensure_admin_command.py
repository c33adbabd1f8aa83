import os
import re
import shlex
import subprocess
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

LOGIN_LINE = re.compile(
    r"^Admin login: http://127\.0\.0\.1:8000/admin/  user: admin  password: (?P<password>\S+)$", re.M
)


def run_ensure_admin() -> str:
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue()


def test_it_creates_admin_with_a_random_password_and_prints_it():
    output = run_ensure_admin()

    match = LOGIN_LINE.search(output)
    assert match, output
    password = match["password"]
    assert len(password) >= 16  # secrets.token_urlsafe(12)
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.is_active
    assert admin.check_password(password)


def test_it_creates_admin_only_once_and_never_prints_the_password_again():
    password = LOGIN_LINE.search(run_ensure_admin())["password"]

    second = run_ensure_admin()

    assert second.startswith("Admin user exists (admin)")
    assert password not in second
    assert not LOGIN_LINE.search(second)
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert get_user_model().objects.get(username="admin").check_password(password)


def test_it_leaves_an_existing_superuser_alone(staff):
    output = run_ensure_admin()

    assert output.startswith("Admin user exists (root)")
    assert not get_user_model().objects.filter(username="admin").exists()
    assert get_user_model().objects.get(username="root").check_password("root-password")


def test_it_refuses_to_promote_an_ordinary_user_named_admin():
    UserFactory(username="admin", password="their-own-password")

    with pytest.raises(CommandError, match="not a superuser"):
        run_ensure_admin()

    admin = get_user_model().objects.get(username="admin")
    assert not admin.is_superuser
    assert admin.check_password("their-own-password")


def test_item_23_the_changepassword_hint_runs_on_the_projects_python(staff):
    """The hint is a command a user can paste where `make run` ran: the Python it names has Django and the project
    (a bare `python` is the system's, or none), shown here by its `--help`, which needs no database."""
    hint = run_ensure_admin().strip()
    command = hint.split("to set a new password: ", 1)[1]
    words = shlex.split(command)

    assert words[0] not in ("python", "python3") and words[1:] == [words[1], "changepassword", "root"]
    done = subprocess.run([*words[:-1], "--help"], capture_output=True, text=True, timeout=120, cwd=os.getcwd(),
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.settings"})
    assert done.returncode == 0 and "Change a user's password" in done.stdout, done.stderr
