"""Invalid graphs get the documented error and leave no row (docs/usage.md#the-graph-format)."""
import copy

import pytest

from engine.graph import GraphInvalid
from workflows.models import WorkflowDefinition, WorkflowExecution
from workflows.services.definitions import definition_create, definition_update
from workflows.services.run_requests import ExecutionRequest
from workflows.services.runs import execution_create

pytestmark = pytest.mark.django_db

VALID = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "tools", "type": "tools"},
              {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "tools", "condition": "has_tool_calls"},
              {"source": "llm", "target": "end"}, {"source": "tools", "target": "llm"}],
}


def broken(change):
    graph = copy.deepcopy(VALID)
    change(graph)
    return graph


INVALID = {
    "unknown_type": broken(lambda g: g["nodes"][1].update(type="oracle")),
    "unknown_node": broken(lambda g: g["edges"].append({"source": "llm", "target": "nowhere"})),
    "unreachable": broken(lambda g: g["nodes"].append({"id": "island", "type": "end"})),
    "no_exit": broken(lambda g: g["edges"].__setitem__(slice(None), [e for e in g["edges"] if e["target"] != "end"])),
    "unguarded_cycle": broken(lambda g: g["edges"][1].pop("condition")),
    "bad_condition": broken(lambda g: g["edges"][1].update(condition="has_tool_calls and and")),
    "out_of_range": broken(lambda g: g["nodes"][1].update(config={"temperature": 9})),
    "multiple_entries": broken(lambda g: g["nodes"].append({"id": "start2", "type": "start"})
                               or g["edges"].append({"source": "start2", "target": "llm"})),
    "too_large": {"nodes": [{"id": f"n{i}", "type": "delay"} for i in range(101)], "edges": []},
}


@pytest.mark.parametrize("code", sorted(INVALID))
def test_an_invalid_graph_gets_its_error_code_and_creates_no_row(alice, code):
    graph = INVALID[code]
    with pytest.raises(GraphInvalid) as caught:
        definition_create(owner=alice, name="bad", nodes=graph["nodes"], edges=graph["edges"])
    assert code in {error["code"] for error in caught.value.errors}
    assert all(set(error) == {"path", "code", "message"} for error in caught.value.errors)
    with pytest.raises(GraphInvalid):
        execution_create(ExecutionRequest(owner=alice, graph=graph, message="hi"))
    assert WorkflowDefinition.objects.count() == 0 and WorkflowExecution.objects.count() == 0


def test_a_graph_change_bumps_the_version_and_other_changes_do_not(alice):
    definition = definition_create(owner=alice, name="d", nodes=VALID["nodes"], edges=VALID["edges"])
    definition = definition_update(definition=definition, name="renamed")
    assert (definition.version, definition.name) == (1, "renamed")
    nodes = copy.deepcopy(VALID["nodes"])
    nodes[1]["config"] = {"temperature": 0.5}
    definition = definition_update(definition=definition, nodes=nodes)
    assert definition.version == 2


def test_an_invalid_update_changes_nothing(alice):
    definition = definition_create(owner=alice, name="d", nodes=VALID["nodes"], edges=VALID["edges"])
    with pytest.raises(GraphInvalid):
        definition_update(definition=definition, edges=INVALID["unknown_node"]["edges"])
    definition.refresh_from_db()
    assert definition.version == 1 and definition.edges == VALID["edges"]


def test_a_react_flow_graph_is_stored_in_the_flat_form(alice):
    nodes = [{"id": n["id"], "type": "custom", "position": {"x": i * 100, "y": 0}, "data": {"nodeType": n["type"]}}
             for i, n in enumerate(VALID["nodes"])]
    edges = [{"id": f"e{i}", "source": e["source"], "target": e["target"],
              **({"data": {"condition": e["condition"]}} if "condition" in e else {})}
             for i, e in enumerate(VALID["edges"])]
    definition = definition_create(owner=alice, name="rf", nodes=nodes, edges=edges)
    assert [n["type"] for n in definition.nodes] == ["start", "model", "tools", "end"]
    assert definition.nodes[1]["position"] == {"x": 100, "y": 0}
    assert definition.edges[1]["condition"] == "has_tool_calls"
