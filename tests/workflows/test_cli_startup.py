"""The command line starts without the model libraries: `manage.py chat --help` and the start of a turn load
Django, the apps and the engine's own modules, and LangGraph, openai and langchain-openai only when a graph is
compiled or an openai model is made (together they took seconds to import); the MCP SDK only when a tool server is
reached (it imports its server side too: half a second of CPU at every process start, servers' and workers' too),
and a document's parsers only when a file of their type is read."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_database  # what a command imports, whatever the database

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"langgraph", "openai", "httpx2", "langchain_openai", "langchain_core.tools", "mcp", "pypdf", "bs4", "mammoth"}

# Everything `manage.py chat` / `run_workflow` loads before it starts a run: settings, every app (the admin
# imports the run services), the URL conf and the ASGI application (what a server loads), and the commands.
PROBE = """
import json, sys
import django
django.setup()
import chatter_project.asgi, chatter_project.urls
from django.core.management import load_command_class
for name in ("chat", "run_workflow", "validate_workflow"):
    load_command_class("workflows", name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"langgraph", "openai", "httpx2",
                                                               "langchain_openai", "mcp", "pypdf", "bs4", "mammoth"}
                        or m == "langchain_core.tools")))
"""


def loaded_at_startup() -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.test_settings"}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_commands_and_servers_start_without_langgraph_the_openai_client_or_the_mcp_sdk():
    assert loaded_at_startup() == []


def test_chat_help_answers_without_them_too():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.test_settings"}
    result = subprocess.run([sys.executable, "-X", "importtime", "manage.py", "chat", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "--conversation" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip()
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & HEAVY
