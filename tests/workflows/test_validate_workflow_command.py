"""`manage.py validate_workflow graph.json` (docs/operations/commands.md): "valid" and exit 0, or one line per error
and exit 1."""
import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from tests import launcher

pytestmark = pytest.mark.one_database  # a file checked, no database read

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SPEC_EXAMPLE = {
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "llm", "type": "model", "config": {"system_message": "Be brief.", "temperature": 0.2}},
        {"id": "tools", "type": "tools"},
        {"id": "end", "type": "end"},
    ],
    "edges": [
        {"source": "start", "target": "llm"},
        {"source": "llm", "target": "tools", "condition": "has_tool_calls"},
        {"source": "llm", "target": "end"},
        {"source": "tools", "target": "llm"},
    ],
}

INVALID = {
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "llm", "type": "model", "config": {"temperature": 7}},
        {"id": "end", "type": "end"},
    ],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "exit"}],
}


def write_json(tmp_path: Path, value) -> Path:
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def run_command(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatter_project.test_settings"}
    return launcher.run([sys.executable, "manage.py", "validate_workflow", *args], cwd=PROJECT_ROOT, env=env,
                        timeout=120)


def test_it_prints_valid_for_a_valid_graph(tmp_path):
    stdout, stderr = StringIO(), StringIO()
    call_command("validate_workflow", str(write_json(tmp_path, SPEC_EXAMPLE)), stdout=stdout, stderr=stderr)
    assert stdout.getvalue().strip() == "valid"
    assert stderr.getvalue() == ""


def test_it_prints_one_line_per_error_and_exits_1(tmp_path):
    stdout, stderr = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("validate_workflow", str(write_json(tmp_path, INVALID)), stdout=stdout, stderr=stderr)
    assert exited.value.code == 1
    assert stdout.getvalue() == ""
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("nodes[1].config.temperature: out_of_range: ")
    assert lines[1].startswith("edges[1].target: unknown_node: ")
    assert "'exit'" in lines[1]


def test_it_accepts_react_flow_files(tmp_path):
    react_flow = {
        "nodes": [
            {"id": "s", "type": "input", "data": {"nodeType": "start"}, "position": {"x": 0, "y": 0}},
            {"id": "e", "type": "output", "data": {"nodeType": "end"}, "position": {"x": 0, "y": 100}},
        ],
        "edges": [{"id": "s-e", "source": "s", "target": "e"}],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }
    stdout = StringIO()
    call_command("validate_workflow", str(write_json(tmp_path, react_flow)), stdout=stdout)
    assert stdout.getvalue().strip() == "valid"


def test_it_reports_a_graph_that_is_not_an_object(tmp_path):
    stderr = StringIO()
    with pytest.raises(SystemExit):
        call_command("validate_workflow", str(write_json(tmp_path, [1, 2])), stderr=stderr)
    assert stderr.getvalue().startswith("graph: invalid_type: ")


def test_it_fails_clearly_on_a_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(CommandError, match="no such file") as raised:
        call_command("validate_workflow", str(missing))
    assert raised.value.returncode == 1


def test_it_fails_clearly_on_a_file_that_is_not_json(tmp_path):
    path = tmp_path / "graph.json"
    path.write_text("{nodes: [}", encoding="utf-8")
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("validate_workflow", str(path))


def test_it_fails_clearly_on_a_binary_file(tmp_path):
    path = tmp_path / "graph.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CommandError, match="graph.json"):
        call_command("validate_workflow", str(path))


def test_exit_codes_from_the_command_line(tmp_path):
    valid = run_command(str(write_json(tmp_path, SPEC_EXAMPLE)))
    assert (valid.returncode, valid.stdout.strip(), valid.stderr) == (0, "valid", "")

    invalid_path = tmp_path / "invalid.json"
    invalid_path.write_text(json.dumps(INVALID), encoding="utf-8")
    invalid = run_command(str(invalid_path))
    assert invalid.returncode == 1
    assert invalid.stdout == ""
    assert invalid.stderr.splitlines() == [
        line for line in invalid.stderr.splitlines() if line.split(": ")[1] in ("out_of_range", "unknown_node")
    ]
    assert len(invalid.stderr.splitlines()) == 2

    missing = run_command(str(tmp_path / "missing.json"))
    assert missing.returncode == 1
    assert "no such file" in missing.stderr

    not_json = tmp_path / "broken.json"
    not_json.write_text("{", encoding="utf-8")
    broken = run_command(str(not_json))
    assert broken.returncode == 1
    assert "not valid JSON" in broken.stderr


@pytest.mark.parametrize("example", ["graph.json", "slow-graph.json"])
def test_the_readme_example_graphs_are_valid(example):
    out = StringIO()
    call_command("validate_workflow", str(PROJECT_ROOT / "examples" / example), stdout=out)
    assert out.getvalue().strip() == "valid"
