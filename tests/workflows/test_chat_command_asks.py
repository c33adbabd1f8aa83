"""The `chat` command asks a question the run waits on (a human_input node) in the terminal and goes on with
the answer; a refused answer is said and asked again; with nobody to ask, the run is left waiting."""
import subprocess
import sys

import pytest

from tests import launcher
from tests.api.test_human_input import ASKING
from tests.fixtures_server import ROOT, server_env
from tests.invariants import assert_all
from workflows.models import WorkflowExecution
from workflows.services.templates import template_create

pytestmark = pytest.mark.django_db(transaction=True)


def chat(tmp_path, typed: str) -> subprocess.CompletedProcess:
    return launcher.run([sys.executable, "manage.py", "chat", "hello", "--template", "asking", "--user", "alice"],
                        cwd=ROOT, env=server_env(tmp_path), input=typed, timeout=60)


def test_it_asks_in_the_terminal_and_goes_on_with_the_answer(alice, tmp_path):
    template_create(owner=alice, key="asking", name="Asks how many", graph=ASKING)

    done = chat(tmp_path, "eleven\n4\n")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("? How many?") == 2  # asked again after the refused answer
    assert "answer: is not valid" in done.stdout or "is not of type 'integer'" in done.stdout, done.stdout
    execution = WorkflowExecution.objects.get()
    assert execution.status == "completed" and execution.output_data["variables"] == {"count": 4}
    assert f"completed in {execution.execution_time_ms} ms" in done.stdout
    assert_all(execution)


def test_with_nobody_to_ask_the_run_is_left_waiting(alice, tmp_path):
    template_create(owner=alice, key="asking", name="Asks how many", graph=ASKING)

    done = chat(tmp_path, "")

    execution = WorkflowExecution.objects.get()
    assert done.returncode == 1 and execution.status == "waiting"
    assert f"/api/v1/executions/{execution.pk}/resume/" in done.stderr
