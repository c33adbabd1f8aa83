"""Settings come from the environment and a bad value stops start-up naming the variable
(docs/operations/configuration.md#settings)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_database  # settings are read in processes of their own, with the database they are given

ROOT = Path(__file__).resolve().parent.parent


def start(tmp_path, *, then: str = "", **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    environment.update({"DJANGO_SETTINGS_MODULE": "chatter_project.settings", "CHATTER_VAR_DIR": str(tmp_path),
                        **env})
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {then}"], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHATTER_MAX_CONCURRENT_RUNS", "lots"),
        ("CHATTER_EXECUTION_TIMEOUT_S", "0"),
        ("DEBUG", "maybe"),
        ("CHATTER_DEFAULT_PROVIDER", "skynet"),
        ("DATABASE_URL", "nonsense://"),
        ("CHATTER_GRAPHS", "/nonexistent/langgraph.json"),
        ("CHATTER_GRAPHS", str(ROOT / "tests" / "agent_server" / "graphs" / "agent.py")),  # not a JSON file
        ("CHATTER_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,intranet"),
        ("CHATTER_WEBHOOK_ALLOWED_NETWORKS", "10.1.2.3/24"),  # host bits set: refused, not widened
        ("CHATTER_OUTBOUND_ALLOWED_NETWORKS", "10.0.0.0/8,intranet"),
        ("CHATTER_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("CHATTER_CORS_ALLOWED_ORIGINS", "localhost:3000"),  # no scheme
        ("CHATTER_CORS_ALLOWED_ORIGINS", "http://localhost:3000/"),  # a path, even "/", never matches an Origin
        ("CHATTER_CORS_ALLOWED_ORIGINS", "http://ui.example,*"),  # no wildcard: name the origins
        ("CHATTER_CORS_ALLOWED_ORIGINS", "https://ui.example:99999"),
        ("CHATTER_CORS_ALLOWED_ORIGINS", "https://user@ui.example"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path, variable, value):
    result = start(tmp_path, SECRET_KEY="k", **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr


def test_a_secret_key_is_required_unless_debug(tmp_path):
    assert "SECRET_KEY" in start(tmp_path).stderr
    assert start(tmp_path, DEBUG="1").returncode == 0


def test_the_key_make_run_generated_is_used_when_the_environment_has_none(tmp_path):
    (tmp_path / "secret_key").write_text("generated-once\n")
    assert start(tmp_path).returncode == 0


CORS_SETTINGS = ("from django.conf import settings; "
                 "print(settings.CORS_ALLOWED_ORIGINS, 'corsheaders.middleware.CorsMiddleware' in settings.MIDDLEWARE)")


def test_cors_origins_are_read_as_browsers_send_them_and_cors_is_off_without_them(tmp_path, monkeypatch):
    configured = start(tmp_path, SECRET_KEY="k", then=CORS_SETTINGS,
                       CHATTER_CORS_ALLOWED_ORIGINS=" http://LocalHost:3000, https://ui.example ,tauri://localhost")
    assert configured.stdout.strip() == "['http://localhost:3000', 'https://ui.example', 'tauri://localhost'] True"

    assert start(tmp_path, SECRET_KEY="k", then=CORS_SETTINGS, CHATTER_CORS_ALLOWED_ORIGINS="").stdout.strip() == \
        "[] False"
    monkeypatch.delenv("CHATTER_CORS_ALLOWED_ORIGINS", raising=False)
    assert start(tmp_path, SECRET_KEY="k", then=CORS_SETTINGS).stdout.strip() == "[] False"


def test_a_sqlite_database_url_gets_the_embedded_databases_locking(tmp_path):
    """Writes take SQLite's lock when they begin and wait for it, with DATABASE_URL=sqlite:///… too (without these,
    two writers upgrading their reads failed at once with "database is locked")."""
    shown = start(tmp_path, DEBUG="1", DATABASE_URL=f"sqlite:///{tmp_path / 'other.sqlite3'}", then=(
        "from django.db import connection; o = connection.settings_dict['OPTIONS']; "
        "print(o['transaction_mode'], o['timeout'], 'WAL' in o['init_command'])"))

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["IMMEDIATE", "20", "True"]
