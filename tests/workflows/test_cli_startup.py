"""The command line starts without the model libraries: `manage.py chat --help` and the start of a turn load
Django, the apps and the engine's own modules, and LangGraph, openai and langchain-openai only when a graph is
compiled or an openai model is made (together they took seconds to import); the MCP SDK only when a tool server is
reached (it imports its server side too: half a second of CPU at every process start, servers' and workers' too),
and a document's parsers only when a file of their type is read. Issue 43 item 24 (a server's or a command's start
cost about 2.8 s of CPU, and `make test` starts hundreds): jsonschema only where a JSON schema is checked, numpy
only when the embedding model runs (sqlite-vec's package imports it, so the SQLite backend loads sqlite-vec's
extension without importing the package), redis-py (which imports OpenTelemetry) only with REDIS_URL, and
pgvector's Django integration only on PostgreSQL. psycopg stays on SQLite: Django REST framework imports
django.contrib.postgres's fields whenever psycopg is installed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The model libraries' checks say the same whatever the database (make test runs them in its SQLite phase only);
# item 24's differ by database and cache.

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"langgraph", "openai", "httpx2", "langchain_openai", "langchain_core.tools", "mcp", "pypdf", "bs4", "mammoth",
         "numpy", "sqlite_vec", "jsonschema"}
# Per database and cache: redis-py with OpenTelemetry only where Redis is the cache, pgvector.django (psycopg's
# types) only on PostgreSQL.
HEAVY_WITHOUT_REDIS = {"redis", "opentelemetry"}
HEAVY_ON_SQLITE = {"pgvector.django"}


def heavy_here() -> set[str]:
    heavy = set(HEAVY)
    if not os.environ.get("REDIS_URL"):
        heavy |= HEAVY_WITHOUT_REDIS
    if not os.environ.get("DATABASE_URL"):
        heavy |= HEAVY_ON_SQLITE
    return heavy


def among(modules, heavy: set[str]) -> set[str]:
    """The modules that are one of `heavy` or inside one of them."""
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)}


# Everything `manage.py chat` / `run_workflow` loads before it starts a run: settings, every app (the admin
# imports the run services), the URL conf and the ASGI application (what a server loads), and the commands.
PROBE = """
import json, sys
import django
django.setup()
import chatter_project.asgi, chatter_project.urls
from django.core.management import load_command_class
from django.db import connection
connection.vendor  # the database backend's module, loaded by a server's first request
for name in ("chat", "run_workflow", "validate_workflow"):
    load_command_class("workflows", name)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def loaded_at_startup() -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.test_settings"}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.one_database
def test_the_commands_and_servers_start_without_langgraph_the_openai_client_or_the_mcp_sdk(loaded_at_startup):
    assert among(loaded_at_startup, HEAVY) == set()


def test_item_24_a_start_imports_neither_numpy_nor_redis_nor_pgvector_where_it_serves_nothing(loaded_at_startup):
    assert among(loaded_at_startup, heavy_here()) == set()


@pytest.mark.one_database
def test_item_24_setting_django_up_imports_neither_daphnes_server_nor_twisted(loaded_at_startup):
    """Daphne's app is installed (its runserver) without daphne.apps, which imported daphne's server, Twisted and
    pyOpenSSL in every worker and command (about 0.4 s of CPU a start); the daphne server imports them itself."""
    assert among(loaded_at_startup, {"daphne.server", "daphne.apps", "twisted", "OpenSSL", "autobahn"}) == set()


@pytest.mark.one_database
def test_chat_help_answers_without_them_too():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.test_settings"}
    result = subprocess.run([sys.executable, "-X", "importtime", "manage.py", "chat", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "--conversation" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip()
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert among(imported, heavy_here()) == set()
