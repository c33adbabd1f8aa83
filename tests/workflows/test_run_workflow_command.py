import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.factories import WorkflowDefinitionFactory
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]

GRAPH = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


def run_workflow(*args):
    out = StringIO()
    call_command("run_workflow", *args, stdout=out)
    return out.getvalue()


def test_it_shows_node_progress_and_the_totals_of_a_template_run(alice):
    output = run_workflow("--template", "draft_and_refine", "--input", '{"message": "Write a haiku"}',
                          "--user", "alice")
    execution = WorkflowExecution.objects.get()
    for node in ("start", "draft", "refine", "end"):
        assert f"▶ {node}" in output and f"✓ {node}" in output
    assert f"total {execution.total_tokens}" in output and f"cost ${execution.cost}" in output
    assert execution.workflow_type == "template" and execution.llm_calls == 2
    assert_all(execution)


def test_it_runs_a_graph_file(alice, tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(GRAPH))
    run_workflow("--file", str(path), "--input", '{"message": "hi"}', "--user", "alice")
    assert WorkflowExecution.objects.get().workflow_type == "custom"


def test_it_runs_a_definition(alice):
    definition = WorkflowDefinitionFactory(owner=alice, name="d", nodes=GRAPH["nodes"], edges=GRAPH["edges"])
    run_workflow("--definition", str(definition.pk), "--input", '{"message": "hi"}', "--user", "alice")
    assert WorkflowExecution.objects.get().definition_version == 1


def test_an_invalid_graph_file_lists_its_errors_and_runs_nothing(alice, tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps({"nodes": GRAPH["nodes"], "edges": [*GRAPH["edges"], {"source": "llm", "target": "x"}]}))
    with pytest.raises(CommandError, match="edges\\[2\\].target: unknown_node"):
        run_workflow("--file", str(path), "--user", "alice")
    assert WorkflowExecution.objects.count() == 0


def test_it_prints_each_error_of_an_invalid_graph_once(alice, tmp_path):
    path = tmp_path / "graph.json"
    nodes = [GRAPH["nodes"][0], {"id": "llm", "type": "model", "config": {"temperature": 9}}, GRAPH["nodes"][2]]
    path.write_text(json.dumps({"nodes": nodes, "edges": [*GRAPH["edges"], {"source": "llm", "target": "x"}]}))
    with pytest.raises(CommandError) as refused:
        run_workflow("--file", str(path), "--user", "alice")

    printed = str(refused.value)
    assert printed.splitlines()[0] == "graph is invalid (2 errors)"
    for error in ("config key 'temperature' of node 'llm' must be at most 2, not 9",
                  "the target of edge 2 is 'x', which is not a node"):
        assert printed.count(error) == 1, printed
    assert WorkflowExecution.objects.count() == 0


def test_bad_input_json_is_a_clear_error(alice):
    with pytest.raises(CommandError, match="--input is not valid JSON"):
        run_workflow("--template", "summarize", "--input", "{nope", "--user", "alice")


def test_a_failed_run_exits_with_an_error(alice):
    with pytest.raises(CommandError, match="limit_exceeded"):
        run_workflow("--template", "summarize", "--input", '{"message": "hi"}', "--config",
                     '{"max_total_tokens": 1}', "--user", "alice")
    assert WorkflowExecution.objects.get().status == "failed"


def test_a_run_that_cost_nothing_prints_its_cost_to_the_cent_fraction_not_in_exponent_form(alice, tmp_path):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps({"nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
                                "edges": [{"source": "start", "target": "end"}]}))
    output = run_workflow("--file", str(path), "--input", '{"message": "hi"}', "--user", "alice")
    assert re.search(r"^✓ end \d+ ms, 0 tokens, \$0\.00000000$", output, re.MULTILINE)
    assert "cost $0.00000000 |" in output and "E-" not in output


def test_a_bad_config_is_one_plain_line_per_problem(alice):
    with pytest.raises(CommandError) as refused:
        run_workflow("--template", "summarize", "--config", '{"allowed_tools": ["x"], "temperature": "a"}',
                     "--user", "alice")
    assert str(refused.value).splitlines() == [
        "invalid run configuration",
        "config.allowed_tools: invalid_choice: unknown tools 'x'; known: calculator, current_time, or an MCP tool as "
        "<server>__<tool> or <server>__*",
        "config.temperature: invalid_type: temperature has the wrong type",
    ]
    assert WorkflowExecution.objects.count() == 0


def test_the_readme_example_graph_runs_both_model_nodes_through_its_condition(alice):
    output = run_workflow("--file", str(ROOT / "examples" / "graph.json"), "--input",
                          '{"message": "Why is the sky blue?"}', "--user", "alice")
    execution = WorkflowExecution.objects.get()
    assert execution.status == "completed" and execution.llm_calls == 2
    assert "✓ check" in output and "✓ shorten" in output
