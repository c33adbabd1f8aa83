"""Workflow graphs (docs/usage.md#the-graph-format): normalization, validation errors with their paths, and the parsed
Graph."""
import copy
import json
import random

import pytest

from core.errors import InvalidInput
from engine.conditions import ConditionContext
from engine.graph import (
    MAX_EDGES,
    MAX_NODES,
    NODE_TYPES,
    Graph,
    GraphInvalid,
    normalize_graph,
    parse_graph,
    validate_graph,
)

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


def example() -> dict:
    return copy.deepcopy(SPEC_EXAMPLE)


def chain(*nodes: tuple[str, str], config: dict | None = None) -> dict:
    """A straight graph through the given (id, type) nodes."""
    graph = {"nodes": [{"id": node_id, "type": node_type} for node_id, node_type in nodes], "edges": []}
    for (source, _), (target, _) in zip(nodes, nodes[1:]):
        graph["edges"].append({"source": source, "target": target})
    return graph


def with_node(node_type: str, config: dict) -> dict:
    """start → x (node_type, config) → end."""
    graph = chain(("start", "start"), ("x", node_type), ("end", "end"))
    graph["nodes"][1]["config"] = config
    return graph


def errors_of(raw) -> list[tuple[str, str]]:
    return [(error["path"], error["code"]) for error in validate_graph(raw)]


# --- valid graphs ------------------------------------------------------------------------------------------------


def test_the_spec_example_is_valid():
    assert validate_graph(example()) == []
    graph = parse_graph(example())
    assert isinstance(graph, Graph)
    assert graph.entry == "start"
    assert [node.id for node in graph.nodes] == ["start", "llm", "tools", "end"]


def test_outgoing_keeps_list_order_and_parses_conditions():
    graph = parse_graph(example())
    edges = graph.outgoing("llm")
    assert [(edge.target, edge.condition) for edge in edges] == [("tools", "has_tool_calls"), ("end", None)]
    assert edges[0].parsed.evaluate(ConditionContext(pending_tool_calls=1))
    assert edges[1].parsed is None
    assert graph.outgoing("end") == ()


def test_node_looks_up_a_node_by_id():
    graph = parse_graph(example())
    assert graph.node("llm").type == "model"
    with pytest.raises(KeyError):
        graph.node("nope")


def test_defaults_are_applied_to_config():
    graph = parse_graph(example())
    assert graph.node("tools").config == {"max_tool_calls": 10, "tool_timeout_ms": 30000}
    # model keys have no defaults: absent means "use the run config"
    assert graph.node("llm").config == {"system_message": "Be brief.", "temperature": 0.2}
    assert graph.node("start").config == {}


@pytest.mark.parametrize(
    "node_type, defaults",
    [
        ("tools", {"max_tool_calls": 10, "tool_timeout_ms": 30000}),
        ("memory", {"summarize": False}),  # memory_window: the run config fills it
        ("retrieval", {}),  # max_documents: the run config fills it
        ("loop", {"max_iterations": 10}),
        ("error_handler", {"retry_count": 3, "fallback_action": "continue"}),
        ("delay", {"duration_ms": 1000, "delay_type": "fixed"}),
        ("model", {}),
    ],
)
def test_each_node_type_gets_its_defaults(node_type, defaults):
    graph = parse_graph(with_node(node_type, {}))
    assert graph.node("x").config == defaults


def test_variable_nodes_default_to_set():
    graph = parse_graph(with_node("variable", {"variable_name": "count"}))
    assert graph.node("x").config == {"operation": "set", "variable_name": "count"}


def test_every_documented_node_type_is_known():
    assert set(NODE_TYPES) == {
        "start", "end", "model", "tools", "memory", "retrieval", "conditional", "loop", "variable", "error_handler",
        "delay", "python_graph", "human_input", "embedding", "rerank",
    }


def test_given_config_values_are_kept():
    config = {
        "system_message": None,
        "temperature": 2,
        "max_tokens": 200000,
        "provider": "openai",
        "model": "gpt-4o",
        "enable_tools": False,
    }
    assert parse_graph(with_node("model", config)).node("x").config == config


def test_a_loop_through_a_loop_node_is_valid():
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "again", "type": "loop", "config": {"max_iterations": 3}},
            {"id": "llm", "type": "model"},
            {"id": "end", "type": "end"},
        ],
        "edges": [
            {"source": "start", "target": "again"},
            {"source": "again", "target": "llm", "condition": "loop again continue"},
            {"source": "again", "target": "end"},
            {"source": "llm", "target": "again"},
        ],
    }
    assert validate_graph(graph) == []


def test_a_loop_node_guards_its_cycle_even_without_conditions():
    graph = {
        "nodes": [{"id": "start", "type": "start"}, {"id": "loop", "type": "loop"}, {"id": "work", "type": "model"}],
        "edges": [
            {"source": "start", "target": "loop"},
            {"source": "loop", "target": "work"},
            {"source": "work", "target": "loop"},
            {"source": "work", "target": "loop"},
        ],
    }
    # The cycle itself is fine; only that it has no way out is reported.
    assert errors_of(graph) == [("nodes[0]", "no_exit"), ("nodes[1]", "no_exit"), ("nodes[2]", "no_exit")]
    graph["nodes"].append({"id": "end", "type": "end"})
    graph["edges"].append({"source": "loop", "target": "end"})
    assert validate_graph(graph) == []


def test_a_cycle_with_a_conditional_edge_is_valid():
    graph = chain(("start", "start"), ("a", "model"), ("b", "tools"), ("end", "end"))
    graph["edges"].append({"source": "b", "target": "a", "condition": "tool_calls < 5"})
    assert validate_graph(graph) == []


def test_a_conditional_node_with_true_and_false_branches_is_valid():
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "check", "type": "conditional", "config": {"condition": "variable n < 3"}},
            {"id": "inc", "type": "variable", "config": {"operation": "increment", "variable_name": "n"}},
            {"id": "end", "type": "end"},
        ],
        "edges": [
            {"source": "start", "target": "check"},
            {"source": "check", "target": "inc", "branch": "true"},
            {"source": "check", "target": "end", "branch": "false"},
            {"source": "inc", "target": "check"},
        ],
    }
    graph_object = parse_graph(graph)
    assert [edge.branch for edge in graph_object.outgoing("check")] == ["true", "false"]


def test_without_a_start_node_the_entry_is_the_node_without_incoming_edges():
    graph = chain(("first", "model"), ("second", "model"))
    assert parse_graph(graph).entry == "first"


def test_a_single_node_is_its_own_entry_and_exit():
    assert parse_graph({"nodes": [{"id": "only", "type": "model"}]}).entry == "only"


def test_a_node_without_outgoing_edges_counts_as_an_exit():
    graph = chain(("start", "start"), ("llm", "model"))
    assert validate_graph(graph) == []


def test_an_empty_condition_means_always():
    graph = example()
    graph["edges"][2]["condition"] = "  "
    assert parse_graph(graph).outgoing("llm")[1].condition is None


def test_node_ids_may_use_the_documented_characters():
    graph = chain(("Start-1", "start"), ("model.v2:x_y", "model"), ("9end", "end"))
    assert validate_graph(graph) == []
    long_id = "a" * 100
    assert validate_graph(chain((long_id, "model"))) == []


# --- normalization -----------------------------------------------------------------------------------------------


REACT_FLOW = {
    "nodes": [
        {"id": "start", "type": "input", "position": {"x": 0, "y": 0}, "data": {"nodeType": "start", "label": "Go"}},
        {
            "id": "llm",
            "type": "custom",
            "position": {"x": 100, "y": 50.5},
            "data": {"nodeType": "model", "label": "Model", "config": {"temperature": 0.7}},
            "width": 150,
            "selected": True,
        },
        {
            "id": "check",
            "type": "default",
            "position": {"x": 200, "y": 0},
            "data": {"nodeType": "conditional", "config": {"condition": "has_errors"}},
        },
        {"id": "fix", "type": "custom", "data": {"nodeType": "error_handler"}},
        {"id": "end", "type": "output", "position": {"x": 300, "y": 0}, "data": {"nodeType": "end"}},
    ],
    "edges": [
        {"id": "e1", "source": "start", "target": "llm", "sourceHandle": None, "animated": True},
        {"id": "e2", "source": "llm", "target": "check", "data": {"condition": "no_tool_calls"}},
        {"id": "e3", "source": "check", "target": "fix", "sourceHandle": "true"},
        {"id": "e4", "source": "check", "target": "end", "sourceHandle": "false"},
        {"id": "e5", "source": "fix", "target": "end", "sourceHandle": "bottom"},
    ],
    "viewport": {"x": 0, "y": 0, "zoom": 1},
}


def test_it_normalizes_react_flow_input():
    assert normalize_graph(copy.deepcopy(REACT_FLOW)) == {
        "nodes": [
            {"id": "start", "type": "start", "config": {}, "label": "Go", "position": {"x": 0, "y": 0}},
            {
                "id": "llm",
                "type": "model",
                "config": {"temperature": 0.7},
                "label": "Model",
                "position": {"x": 100, "y": 50.5},
            },
            {
                "id": "check",
                "type": "conditional",
                "config": {"condition": "has_errors"},
                "label": "check",
                "position": {"x": 200, "y": 0},
            },
            {
                "id": "fix",
                "type": "error_handler",
                "config": {"retry_count": 3, "fallback_action": "continue"},
                "label": "fix",
            },
            {"id": "end", "type": "end", "config": {}, "label": "end", "position": {"x": 300, "y": 0}},
        ],
        "edges": [
            {"source": "start", "target": "llm", "id": "e1"},
            {"source": "llm", "target": "check", "id": "e2", "condition": "no_tool_calls"},
            {"source": "check", "target": "fix", "id": "e3", "branch": "true"},
            {"source": "check", "target": "end", "id": "e4", "branch": "false"},
            {"source": "fix", "target": "end", "id": "e5"},
        ],
    }


def test_the_normalized_form_round_trips():
    for raw in (example(), copy.deepcopy(REACT_FLOW)):
        graph = parse_graph(raw)
        again = parse_graph(graph.as_dict())
        assert again == graph
        assert again.as_dict() == graph.as_dict() == normalize_graph(raw)
        assert json.loads(json.dumps(graph.as_dict())) == graph.as_dict()


def test_react_flow_type_is_ignored_when_data_carries_the_node_type():
    graph = chain(("start", "start"), ("end", "end"))
    graph["nodes"][0] = {"id": "start", "type": "default", "data": {"nodeType": "start"}}
    assert parse_graph(graph).node("start").type == "start"


def test_react_flow_errors_use_normalized_paths():
    raw = copy.deepcopy(REACT_FLOW)
    raw["nodes"][1]["data"]["config"]["temperature"] = 5
    raw["nodes"][3]["data"]["nodeType"] = "teleport"
    raw["edges"][1]["data"]["condition"] = "has_errors or"
    assert errors_of(raw) == [
        ("nodes[1].config.temperature", "out_of_range"),
        ("nodes[3].type", "unknown_type"),
        ("edges[1].condition", "bad_condition"),
    ]


def test_normalizing_does_not_mutate_or_share_the_input():
    raw = copy.deepcopy(REACT_FLOW)
    raw["nodes"][1]["data"]["config"]["model"] = "m"
    before = copy.deepcopy(raw)
    normalized = normalize_graph(raw)
    assert raw == before
    normalized["nodes"][1]["config"]["model"] = "changed"
    normalized["nodes"][1]["position"]["x"] = -1
    assert raw == before
    assert parse_graph(raw).node("llm").config["model"] == "m"


def test_a_boolean_branch_is_normalized_to_a_string():
    graph = chain(("start", "start"), ("check", "conditional"), ("end", "end"))
    graph["nodes"][1]["config"] = {"condition": "has_errors"}
    graph["edges"][1]["branch"] = True
    assert parse_graph(graph).outgoing("check")[0].branch == "true"


def test_labels_default_to_the_node_id_and_may_be_given_flat():
    graph = example()
    graph["nodes"][1]["label"] = "The model"
    parsed = parse_graph(graph)
    assert parsed.node("llm").label == "The model"
    assert parsed.node("tools").label == "tools"
    assert parsed.node("tools").position is None


def test_normalize_graph_raises_graph_invalid_for_an_invalid_graph():
    with pytest.raises(GraphInvalid):
        normalize_graph({"nodes": "nope"})


# --- validation errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        (None, [("", "invalid_type")]),
        ("graph", [("", "invalid_type")]),
        (42, [("", "invalid_type")]),
        ([], [("", "invalid_type")]),
        ({}, [("nodes", "required")]),
        ({"nodes": {}}, [("nodes", "invalid_type")]),
        ({"nodes": [], "edges": None}, [("edges", "invalid_type")]),
        ({"nodes": [], "edges": "x"}, [("edges", "invalid_type")]),
        ({"nodes": [1, "a", None], "edges": [True]}, [
            ("nodes[0]", "invalid_type"),
            ("nodes[1]", "invalid_type"),
            ("nodes[2]", "invalid_type"),
            ("edges[0]", "invalid_type"),
        ]),
    ],
)
def test_it_rejects_the_wrong_json_types(raw, expected):
    assert errors_of(raw) == expected


def test_it_rejects_an_empty_graph_as_having_no_entry():
    assert errors_of({"nodes": [], "edges": []}) == [("nodes", "no_entry")]


def test_it_requires_node_ids_and_types():
    graph = example()
    del graph["nodes"][1]["id"]
    del graph["nodes"][2]["type"]
    graph["nodes"].append({"id": None, "type": "end"})
    assert errors_of(graph) == [
        ("nodes[1].id", "required"),
        ("nodes[2].type", "required"),
        ("nodes[4].id", "required"),
        # the edges naming 'llm' now dangle
        ("edges[0].target", "unknown_node"),
        ("edges[1].source", "unknown_node"),
        ("edges[2].source", "unknown_node"),
        ("edges[3].target", "unknown_node"),
    ]


@pytest.mark.parametrize("bad_id", ["", "-start", "_x", "has space", "a/b", "ä", "a" * 101, "x\n", "a;b"])
def test_it_rejects_an_invalid_node_id(bad_id):
    graph = chain((bad_id, "model"))
    assert errors_of(graph) == [("nodes[0].id", "invalid_id")]


def test_it_rejects_a_non_string_node_id():
    assert errors_of(chain((7, "model"))) == [("nodes[0].id", "invalid_type")]


def test_it_rejects_a_duplicate_node_id():
    graph = example()
    graph["nodes"].append({"id": "tools", "type": "tools"})
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("nodes[4].id", "duplicate_id")]
    assert "'tools'" in errors[0]["message"] and "nodes[2]" in errors[0]["message"]


def test_it_rejects_an_unknown_node_type():
    graph = example()
    graph["nodes"][2]["type"] = "teleporter"
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("nodes[2].type", "unknown_type")]
    assert "teleporter" in errors[0]["message"]


def test_it_rejects_a_non_string_node_type():
    graph = example()
    graph["nodes"][2]["type"] = ["tools"]
    assert errors_of(graph) == [("nodes[2].type", "invalid_type")]


def test_it_rejects_an_unknown_config_key():
    graph = example()
    graph["nodes"][1]["config"]["temprature"] = 0.5
    graph["nodes"][0]["config"] = {"anything": 1}
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [
        ("nodes[0].config.anything", "unknown_key"),
        ("nodes[1].config.temprature", "unknown_key"),
    ]
    assert "temprature" in errors[1]["message"] and "'llm'" in errors[1]["message"]


def test_it_rejects_a_config_that_is_not_an_object():
    graph = example()
    graph["nodes"][1]["config"] = ["temperature", 1]
    assert errors_of(graph) == [("nodes[1].config", "invalid_type")]


@pytest.mark.parametrize(
    "node_type, key, value",
    [
        ("model", "temperature", "hot"),
        ("model", "temperature", True),  # bools are not numbers
        ("model", "max_tokens", 1.5),
        ("model", "max_tokens", "100"),
        ("model", "system_message", 3),
        ("model", "enable_tools", "yes"),
        ("model", "enable_tools", 1),
        ("tools", "max_tool_calls", False),
        ("tools", "max_tool_calls", None),
        ("memory", "summarize", "false"),
        ("conditional", "condition", 1),
        ("variable", "variable_name", ["n"]),
        ("delay", "duration_ms", {"ms": 1}),
    ],
)
def test_it_rejects_a_config_value_of_the_wrong_type(node_type, key, value):
    config = {"condition": "has_errors"} if node_type == "conditional" else {}
    if node_type == "variable":
        config = {"variable_name": "n"}
    config[key] = value
    assert errors_of(with_node(node_type, config)) == [(f"nodes[1].config.{key}", "invalid_type")]


@pytest.mark.parametrize(
    "node_type, key, value",
    [
        ("model", "temperature", -0.1),
        ("model", "temperature", 2.01),
        ("model", "temperature", float("nan")),
        ("model", "temperature", float("inf")),
        ("model", "max_tokens", 0),
        ("model", "max_tokens", 200001),
        ("model", "system_message", "x" * 20001),
        ("model", "model", "m" * 256),
        ("tools", "max_tool_calls", 0),
        ("tools", "max_tool_calls", 101),
        ("tools", "tool_timeout_ms", 300001),
        ("memory", "memory_window", 1001),
        ("retrieval", "max_documents", 51),
        ("loop", "max_iterations", 0),
        ("error_handler", "retry_count", 11),
        ("error_handler", "retry_count", -1),
        ("delay", "duration_ms", 60001),
        ("delay", "duration_ms", -1),
        ("variable", "variable_name", ""),
        ("variable", "variable_name", "v" * 101),
        ("variable", "value", [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
    ],
)
def test_it_rejects_a_config_value_out_of_range(node_type, key, value):
    config = {"variable_name": "n"} if node_type == "variable" else {}
    config[key] = value
    errors = validate_graph(with_node(node_type, config))
    assert [(error["path"], error["code"]) for error in errors] == [(f"nodes[1].config.{key}", "out_of_range")]


@pytest.mark.parametrize(
    "node_type, key, value",
    [
        ("model", "temperature", 0),
        ("model", "temperature", 2),
        ("model", "max_tokens", 1),
        ("tools", "max_tool_calls", 100),
        ("error_handler", "retry_count", 0),
        ("delay", "duration_ms", 0),
        ("delay", "duration_ms", 60000),
        ("variable", "variable_name", "v" * 100),
        ("variable", "value", {"any": ["json", 1, None, True]}),
        ("variable", "value", None),
    ],
)
def test_it_accepts_config_values_at_the_bounds(node_type, key, value):
    config = {"variable_name": "n"} if node_type == "variable" else {}
    config[key] = value
    assert validate_graph(with_node(node_type, config)) == []


@pytest.mark.parametrize(
    "node_type, key, value",
    [
        ("model", "provider", "azure"),
        ("variable", "operation", "multiply"),
        ("error_handler", "fallback_action", "retry"),
        ("delay", "delay_type", "linear"),
    ],
)
def test_it_rejects_a_value_not_among_the_choices(node_type, key, value):
    config = {"variable_name": "n"} if node_type == "variable" else {}
    config[key] = value
    errors = validate_graph(with_node(node_type, config))
    assert [(error["path"], error["code"]) for error in errors] == [(f"nodes[1].config.{key}", "invalid_choice")]
    assert value in errors[0]["message"]


def test_it_requires_the_required_config_keys():
    assert errors_of(with_node("conditional", {})) == [("nodes[1].config.condition", "required")]
    assert errors_of(with_node("variable", {"operation": "get"})) == [("nodes[1].config.variable_name", "required")]


def test_it_rejects_a_conditional_node_whose_condition_does_not_parse():
    errors = validate_graph(with_node("conditional", {"condition": "has_errors and and"}))
    assert [(error["path"], error["code"]) for error in errors] == [("nodes[1].config.condition", "bad_condition")]
    assert "character 15" in errors[0]["message"]


def test_it_rejects_a_loop_node_whose_condition_does_not_parse():
    assert errors_of(with_node("loop", {"condition": "__import__('os')"})) == [
        ("nodes[1].config.condition", "bad_condition")
    ]


def test_it_rejects_a_dangling_edge():
    graph = example()
    graph["edges"].append({"source": "llm", "target": "nowhere"})
    graph["edges"].append({"source": "ghost", "target": "end"})
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [
        ("edges[4].target", "unknown_node"),
        ("edges[5].source", "unknown_node"),
    ]
    assert "'nowhere'" in errors[0]["message"]


def test_it_requires_edge_ends_to_be_node_ids():
    graph = example()
    graph["edges"].append({"target": "end"})
    graph["edges"].append({"source": "llm", "target": 3})
    assert errors_of(graph) == [("edges[4].source", "required"), ("edges[5].target", "invalid_type")]


def test_it_rejects_an_edge_condition_that_does_not_parse():
    graph = example()
    graph["edges"][1]["condition"] = "has_tool_calls or"
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("edges[1].condition", "bad_condition")]
    assert "character 17" in errors[0]["message"]


def test_it_rejects_an_edge_condition_that_is_not_a_string():
    graph = example()
    graph["edges"][1]["condition"] = True
    assert errors_of(graph) == [("edges[1].condition", "invalid_type")]


def test_it_rejects_loop_continue_naming_a_node_that_is_not_a_loop():
    graph = example()
    graph["edges"][1]["condition"] = "loop tools continue"
    graph["edges"][3]["condition"] = "loop nowhere continue"
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [
        ("edges[1].condition", "bad_condition"),
        ("edges[3].condition", "bad_condition"),
    ]
    assert "'tools'" in errors[0]["message"] and "not a loop node" in errors[0]["message"]
    assert "'nowhere'" in errors[1]["message"]


def test_it_checks_loop_references_in_node_conditions_too():
    graph = with_node("conditional", {"condition": "loop x continue"})
    assert errors_of(graph) == [("nodes[1].config.condition", "bad_condition")]


def test_it_rejects_a_branch_on_an_edge_not_leaving_a_conditional_node():
    graph = example()
    graph["edges"][1]["branch"] = "true"
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("edges[1].branch", "invalid_branch")]
    assert "'llm'" in errors[0]["message"]


def test_it_rejects_a_react_flow_true_handle_on_a_non_conditional_node():
    graph = example()
    graph["edges"][1]["sourceHandle"] = "false"
    assert errors_of(graph) == [("edges[1].branch", "invalid_branch")]


def test_it_rejects_a_branch_other_than_true_or_false():
    graph = with_node("conditional", {"condition": "has_errors"})
    graph["edges"][1]["branch"] = "maybe"
    assert errors_of(graph) == [("edges[1].branch", "invalid_choice")]
    graph["edges"][1]["branch"] = 1
    assert errors_of(graph) == [("edges[1].branch", "invalid_type")]


def test_it_rejects_edges_into_start_or_out_of_end():
    graph = example()
    graph["edges"].append({"source": "tools", "target": "start", "condition": "has_errors"})
    graph["edges"].append({"source": "end", "target": "llm"})
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [
        ("edges[4].target", "invalid_edge"),
        ("edges[5].source", "invalid_edge"),
    ]


def test_it_rejects_two_start_nodes():
    graph = example()
    graph["nodes"].append({"id": "start2", "type": "start"})
    graph["edges"].append({"source": "start2", "target": "llm"})
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("nodes", "multiple_entries")]
    assert "'start'" in errors[0]["message"] and "'start2'" in errors[0]["message"]


def test_it_rejects_several_roots_without_a_start_node():
    graph = {
        "nodes": [{"id": "a", "type": "model"}, {"id": "b", "type": "model"}, {"id": "end", "type": "end"}],
        "edges": [{"source": "a", "target": "end"}, {"source": "b", "target": "end"}],
    }
    assert errors_of(graph) == [("nodes", "multiple_entries")]


def test_it_rejects_a_graph_where_every_node_has_an_incoming_edge_and_none_is_start():
    graph = {
        "nodes": [{"id": "a", "type": "model"}, {"id": "b", "type": "model"}, {"id": "end", "type": "end"}],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "a", "condition": "has_errors"},
            {"source": "b", "target": "end"},
            {"source": "end", "target": "a"},
        ],
    }
    # end → a is itself an error; without it, there is no entry.
    assert errors_of(graph) == [("edges[3].source", "invalid_edge")]
    graph["edges"].pop()
    graph["edges"].append({"source": "b", "target": "a", "condition": "has_tool_calls"})
    graph["edges"].insert(0, {"source": "a", "target": "a", "condition": "has_errors"})
    graph["nodes"][2]["type"] = "tools"
    graph["edges"].append({"source": "end", "target": "a", "condition": "no_tool_calls"})
    assert ("nodes", "no_entry") in errors_of(graph)


def test_it_rejects_an_unreachable_node():
    graph = example()
    graph["nodes"].append({"id": "island", "type": "memory"})
    graph["edges"].append({"source": "island", "target": "end"})
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("nodes[4]", "unreachable")]
    assert "'island'" in errors[0]["message"]


def test_it_rejects_a_cycle_without_exit():
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "a", "type": "model"},
            {"id": "b", "type": "tools"},
            {"id": "end", "type": "end"},
        ],
        "edges": [
            {"source": "start", "target": "a"},
            {"source": "start", "target": "end"},
            {"source": "a", "target": "b"},
            {"source": "b", "target": "a", "condition": "has_tool_calls"},
        ],
    }
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("nodes[1]", "no_exit"), ("nodes[2]", "no_exit")]
    assert "'a'" in errors[0]["message"]


def test_it_rejects_an_unguarded_cycle():
    graph = example()
    graph["edges"][1]["condition"] = None  # llm → tools → llm, with llm → end as the way out
    errors = validate_graph(graph)
    assert [(error["path"], error["code"]) for error in errors] == [("edges[1]", "unguarded_cycle")]
    assert "'llm'" in errors[0]["message"] and "'tools'" in errors[0]["message"]


def test_it_rejects_an_unguarded_self_loop():
    graph = chain(("start", "start"), ("a", "model"), ("end", "end"))
    graph["edges"].insert(1, {"source": "a", "target": "a"})
    assert errors_of(graph) == [("edges[1]", "unguarded_cycle")]
    graph["edges"][1]["condition"] = "has_errors"
    assert validate_graph(graph) == []


def test_it_reports_each_unguarded_cycle_once():
    graph = chain(("start", "start"), ("a", "model"), ("b", "model"), ("c", "model"), ("d", "model"), ("end", "end"))
    graph["edges"].append({"source": "b", "target": "a"})
    graph["edges"].append({"source": "c", "target": "a"})
    graph["edges"].append({"source": "d", "target": "d"})
    assert errors_of(graph) == [("edges[1]", "unguarded_cycle"), ("edges[7]", "unguarded_cycle")]


def test_a_guarded_edge_elsewhere_does_not_guard_an_unguarded_cycle():
    graph = example()
    graph["edges"][1]["condition"] = None
    graph["edges"][2]["condition"] = "has_errors"
    assert errors_of(graph) == [("edges[1]", "unguarded_cycle")]


def test_it_rejects_too_many_nodes_and_stops_there():
    nodes = [{"id": f"n{i}", "type": "nope"} for i in range(MAX_NODES + 1)]
    errors = validate_graph({"nodes": nodes, "edges": [{"source": "x", "target": "y"}]})
    assert [(error["path"], error["code"]) for error in errors] == [("nodes", "too_large")]
    assert str(MAX_NODES) in errors[0]["message"]


def test_it_rejects_too_many_edges_and_stops_there():
    graph = example()
    graph["edges"] = [{"source": "nope"}] * (MAX_EDGES + 1)
    assert errors_of(graph) == [("edges", "too_large")]


def test_it_rejects_a_huge_graph_cheaply():
    huge = {"nodes": [None] * 1_000_000, "edges": [None] * 1_000_000}
    assert errors_of(huge) == [("nodes", "too_large"), ("edges", "too_large")]


def test_the_limits_themselves_are_allowed():
    nodes = [{"id": f"n{i}", "type": "model"} for i in range(MAX_NODES)]
    edges = [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(MAX_NODES - 1)]
    edges += [{"source": f"n{i}", "target": f"n{i + 2}"} for i in range(MAX_NODES - 2)]
    edges += [{"source": f"n{i}", "target": f"n{i + 3}"} for i in range(MAX_EDGES - len(edges))]
    assert len(edges) == MAX_EDGES
    assert validate_graph({"nodes": nodes, "edges": edges}) == []


def test_it_reports_every_node_and_edge_error_at_once():
    graph = example()
    graph["nodes"][1]["config"]["temperature"] = 9
    graph["nodes"][2]["type"] = "robot"
    graph["edges"][2]["target"] = "exit"
    assert errors_of(graph) == [
        ("nodes[1].config.temperature", "out_of_range"),
        ("nodes[2].type", "unknown_type"),
        ("edges[2].target", "unknown_node"),
    ]


def test_structural_checks_wait_for_node_and_edge_errors_to_be_fixed():
    graph = example()
    graph["nodes"].append({"id": "island", "type": "memory", "config": {"memory_window": 0}})
    assert errors_of(graph) == [("nodes[4].config.memory_window", "out_of_range")]
    graph["nodes"][4]["config"]["memory_window"] = 5
    assert errors_of(graph) == [("nodes[4]", "unreachable")]


def test_it_rejects_non_object_data_and_label_and_position():
    graph = example()
    graph["nodes"][1]["data"] = "x"
    graph["nodes"][2]["label"] = 5
    graph["nodes"][3]["position"] = [0, 0]
    graph["edges"][0]["data"] = 1
    graph["edges"][1]["id"] = 9
    assert errors_of(graph) == [
        ("nodes[1].data", "invalid_type"),
        ("nodes[2].label", "invalid_type"),
        ("nodes[3].position", "invalid_type"),
        ("edges[0].data", "invalid_type"),
        ("edges[1].id", "invalid_type"),
    ]


def test_every_error_has_a_path_a_code_and_a_plain_message():
    graph = example()
    graph["nodes"][1]["config"]["temperature"] = 3
    [error] = validate_graph(graph)
    assert set(error) == {"path", "code", "message"}
    assert error["path"] == "nodes[1].config.temperature"
    assert "temperature" in error["message"] and "'llm'" in error["message"] and "3" in error["message"]


# --- GraphInvalid ------------------------------------------------------------------------------------------------


def test_parse_graph_raises_graph_invalid_with_every_error():
    graph = example()
    graph["nodes"][1]["config"]["temperature"] = 3
    graph["edges"][0]["target"] = "gone"
    with pytest.raises(GraphInvalid) as caught:
        parse_graph(graph)
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert error.code == "invalid_graph"
    assert error.status == 400
    assert error.errors == error.details == validate_graph(graph)
    assert "2 errors" in error.message and "nodes[1].config.temperature" in error.message
    assert error.as_dict()["error"]["details"] == error.errors


def test_graph_invalid_says_one_error_in_the_singular():
    with pytest.raises(GraphInvalid) as caught:
        parse_graph({"nodes": []})
    assert "1 error)" in caught.value.message


# --- hostile input -----------------------------------------------------------------------------------------------


def _garbage(rng: random.Random, depth: int = 0):
    choices = [None, True, False, 0, -1, 1.5, float("nan"), "", "start", "end", "model", "x" * 300, "ü"]
    choices.append("loop a continue")
    if depth < 4:
        choices += ["list", "dict", "dict", "node", "edge"]
    pick = rng.choice(choices)
    if pick == "list":
        return [_garbage(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if pick == "dict":
        keys = ["id", "type", "config", "data", "nodeType", "label", "position", "source", "target", "condition",
                "branch", "sourceHandle", "nodes", "edges", "temperature", "condition", "variable_name", "value"]
        return {rng.choice(keys): _garbage(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    if pick == "node":
        return {"id": rng.choice(["a", "b", "start", "end", 3]), "type": rng.choice(list(NODE_TYPES) + ["?"]),
                "config": _garbage(rng, depth + 1)}
    if pick == "edge":
        return {"source": rng.choice(["a", "b", "start", "end"]), "target": rng.choice(["a", "b", "end", None]),
                "condition": rng.choice([None, "has_errors", "loop a continue", "((", 5]),
                "branch": rng.choice([None, "true", "no"])}
    return pick


def test_it_never_raises_on_garbage():
    rng = random.Random(1234)
    for _ in range(3000):
        raw = {"nodes": _garbage(rng), "edges": _garbage(rng)} if rng.random() < 0.7 else _garbage(rng)
        errors = validate_graph(raw)
        assert isinstance(errors, list)
        for error in errors:
            assert set(error) == {"path", "code", "message"}
            assert isinstance(error["message"], str) and error["message"]


def test_it_never_raises_on_deeply_nested_values():
    deep: list = []
    for _ in range(900):
        deep = [deep]
    graph = with_node("variable", {"variable_name": "n", "value": deep})
    graph["nodes"][0]["position"] = {"x": deep}
    graph["nodes"][1]["data"] = {"label": deep, "config": deep}
    graph["edges"][0]["data"] = {"condition": deep}
    codes = {code for _, code in errors_of(graph)}
    assert codes <= {"invalid_type", "out_of_range"}
    assert codes


def test_it_handles_unhashable_ids_and_types():
    graph = {
        "nodes": [{"id": ["a"], "type": {"t": 1}}, {"id": {"x": 1}, "type": ["model"], "data": {"nodeType": []}}],
        "edges": [{"source": ["a"], "target": {"x": 1}, "branch": ["true"], "sourceHandle": {"h": 1}}],
    }
    assert {code for _, code in errors_of(graph)} == {"invalid_type"}


def test_it_handles_huge_strings():
    graph = example()
    graph["nodes"][1]["id"] = "x" * 100_000
    graph["nodes"][2]["type"] = "y" * 100_000
    graph["edges"][1]["condition"] = "has_errors or " * 10_000
    errors = validate_graph(graph)
    assert ("nodes[1].id", "invalid_id") in [(error["path"], error["code"]) for error in errors]
    assert all(len(error["message"]) < 1000 for error in errors)
