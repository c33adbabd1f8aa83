"""Workflow graphs (SPEC §3): normalization of flat and React-Flow input, validation, and the parsed `Graph`.

`validate_graph` never raises on any JSON value; it returns a list of `{"path", "code", "message"}` errors.
Node- and edge-level checks all run and report every problem; the structural checks (entry, reachability,
exits, cycles) run only once those pass, so their errors speak about a well-formed graph.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from chatter_project.errors import InvalidInput
from workflows.engine.conditions import Condition, ConditionError, parse_condition

MAX_NODES = 100
MAX_EDGES = 200
MAX_LABEL_LENGTH = 255
MAX_VALUE_DEPTH = 32  # nesting of free-form JSON values (variable.value): deeper ones could exhaust the stack
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")  # used with fullmatch
BRANCHES = ("true", "false")


@dataclass(frozen=True)
class ConfigKey:
    """One allowed config key of a node type. Ranges bound numbers; lengths bound strings."""

    kind: Literal["str", "int", "number", "bool", "any"]
    default: Any = None  # None: the key is left out of the normalized config unless given
    required: bool = False
    nullable: bool = False  # null is accepted (for model keys it means "use the run config")
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    is_condition: bool = False  # the value is a condition that must parse


NODE_TYPES: dict[str, dict[str, ConfigKey]] = {
    "start": {},
    "end": {},
    "model": {
        "system_message": ConfigKey("str", nullable=True, max_length=20000),
        "temperature": ConfigKey("number", nullable=True, minimum=0, maximum=2),
        "max_tokens": ConfigKey("int", nullable=True, minimum=1, maximum=200000),
        "provider": ConfigKey("str", nullable=True, choices=("local", "openai", "anthropic")),
        "model": ConfigKey("str", nullable=True, max_length=255),
        "enable_tools": ConfigKey("bool", nullable=True),
    },
    "tools": {
        "max_tool_calls": ConfigKey("int", default=10, minimum=1, maximum=100),
        "tool_timeout_ms": ConfigKey("int", default=30000, minimum=1, maximum=300000),
    },
    "memory": {
        # Absent: the run config's memory_window (default 10) applies.
        "memory_window": ConfigKey("int", nullable=True, minimum=1, maximum=1000),
        "summarize": ConfigKey("bool", default=False),
    },
    "retrieval": {
        # Absent: the run config's max_documents (default 5) applies.
        "max_documents": ConfigKey("int", nullable=True, minimum=1, maximum=50),
    },
    "conditional": {
        "condition": ConfigKey("str", required=True, is_condition=True),
    },
    "loop": {
        "max_iterations": ConfigKey("int", default=10, minimum=1, maximum=1000),
        "condition": ConfigKey("str", nullable=True, is_condition=True),
    },
    "variable": {
        "operation": ConfigKey("str", default="set", choices=("set", "get", "append", "increment", "decrement")),
        "variable_name": ConfigKey("str", required=True, min_length=1, max_length=100),
        "value": ConfigKey("any", nullable=True),
    },
    "error_handler": {
        "retry_count": ConfigKey("int", default=3, minimum=0, maximum=10),
        "fallback_action": ConfigKey("str", default="continue", choices=("continue", "stop")),
    },
    "delay": {
        "duration_ms": ConfigKey("int", default=1000, minimum=0, maximum=60000),
        "delay_type": ConfigKey("str", default="fixed", choices=("fixed", "random", "exponential")),
    },
}


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    config: dict  # defaults applied; keys without a default appear only when given
    label: str  # the node id when no label was given
    position: dict | None = None  # React-Flow canvas position, kept as metadata


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    condition: str | None = None
    branch: str | None = None  # "true" | "false": taken only when the source conditional node's result matches
    parsed: Condition | None = None
    id: str | None = None  # a client-side edge id, kept for round-trips


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    entry: str
    _nodes_by_id: dict[str, Node] = field(init=False, repr=False, compare=False)
    _outgoing: dict[str, tuple[Edge, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        outgoing: dict[str, list[Edge]] = {node.id: [] for node in self.nodes}
        for edge in self.edges:
            outgoing[edge.source].append(edge)
        object.__setattr__(self, "_nodes_by_id", {node.id: node for node in self.nodes})
        object.__setattr__(self, "_outgoing", {node_id: tuple(edges) for node_id, edges in outgoing.items()})

    def node(self, node_id: str) -> Node:
        return self._nodes_by_id[node_id]

    def outgoing(self, node_id: str) -> tuple[Edge, ...]:
        """The edges leaving a node, in list order (routing takes the first whose condition holds)."""
        return self._outgoing[node_id]

    def as_dict(self) -> dict:
        """The normalized flat form; `parse_graph(graph.as_dict())` gives an equal graph."""
        nodes = []
        for node in self.nodes:
            item: dict[str, Any] = {"id": node.id, "type": node.type, "config": copy.deepcopy(node.config)}
            item["label"] = node.label
            if node.position is not None:
                item["position"] = copy.deepcopy(node.position)
            nodes.append(item)
        edges = []
        for edge in self.edges:
            item = {"source": edge.source, "target": edge.target}
            if edge.id is not None:
                item["id"] = edge.id
            if edge.condition is not None:
                item["condition"] = edge.condition
            if edge.branch is not None:
                item["branch"] = edge.branch
            edges.append(item)
        return {"nodes": nodes, "edges": edges}


class GraphInvalid(InvalidInput):
    code = "invalid_graph"

    def __init__(self, errors: list[dict]):
        first = errors[0]
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        super().__init__(f"graph is invalid ({count}); {first['path'] or 'graph'}: {first['message']}", details=errors)
        self.errors = errors


def normalize_graph(raw: Any) -> dict:
    """The normalized flat form of a flat or React-Flow graph, defaults applied. Raises GraphInvalid."""
    return parse_graph(raw).as_dict()


def validate_graph(raw: Any) -> list[dict]:
    """Every problem with a graph, or [] when it is valid. Never raises."""
    return _GraphReader(raw).read()[1]


def parse_graph(raw: Any) -> Graph:
    graph, errors = _GraphReader(raw).read()
    if errors or graph is None:
        raise GraphInvalid(errors)
    return graph


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _GraphReader:
    """Reads raw input once: collects errors and, when there are none, builds the Graph."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.errors: list[dict] = []
        self.conditions: list[tuple[str, Condition]] = []  # (path, parsed) of every condition that parsed

    def error(self, path: str, code: str, message: str) -> None:
        self.errors.append({"path": path, "code": code, "message": message})

    def wrong_type(self, path: str, what: str, expected: str, value: Any) -> None:
        self.error(path, "invalid_type", f"{what} must be {expected}, not {_json_type(value)}")

    def read(self) -> tuple[Graph | None, list[dict]]:
        raw = self.raw
        if not isinstance(raw, dict):
            self.wrong_type("", "the graph", "an object with nodes and edges", raw)
            return None, self.errors
        if "nodes" not in raw:
            self.error("nodes", "required", "the graph has no nodes list")
        raw_nodes = raw.get("nodes", [])
        raw_edges = raw.get("edges", [])
        if not isinstance(raw_nodes, list):
            self.wrong_type("nodes", "nodes", "a list", raw_nodes)
        if not isinstance(raw_edges, list):
            self.wrong_type("edges", "edges", "a list", raw_edges)
        if self.errors:
            return None, self.errors
        # Checked first, and final, so a huge graph costs nothing more to reject.
        if len(raw_nodes) > MAX_NODES:
            self.error("nodes", "too_large", f"the graph has {len(raw_nodes)} nodes; at most {MAX_NODES} are allowed")
        if len(raw_edges) > MAX_EDGES:
            self.error("edges", "too_large", f"the graph has {len(raw_edges)} edges; at most {MAX_EDGES} are allowed")
        if self.errors:
            return None, self.errors

        nodes = [self.read_node(index, item) for index, item in enumerate(raw_nodes)]
        self.check_duplicate_ids(raw_nodes)
        # Every id a node claims counts as known, so a node with another problem doesn't also make its edges dangle.
        known_ids = {item["id"] for item in raw_nodes if isinstance(item, dict) and isinstance(item.get("id"), str)}
        types = {node.id: node.type for node in nodes if node is not None}
        edges = [self.read_edge(index, item, known_ids, types) for index, item in enumerate(raw_edges)]
        self.check_loop_references(types)
        if self.errors:
            return None, self.errors

        complete_nodes = [node for node in nodes if node is not None]
        complete_edges = [edge for edge in edges if edge is not None]
        entry = self.check_structure(complete_nodes, complete_edges)
        if self.errors or entry is None:
            return None, self.errors
        return Graph(nodes=tuple(complete_nodes), edges=tuple(complete_edges), entry=entry), []

    # -- nodes ----------------------------------------------------------------------------------------------------

    def read_node(self, index: int, item: Any) -> Node | None:
        """The node, or None when it is too broken to use (its errors are recorded)."""
        path = f"nodes[{index}]"
        if not isinstance(item, dict):
            self.wrong_type(path, f"node {index}", "an object", item)
            return None
        data = item.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            self.wrong_type(f"{path}.data", f"the data of node {index}", "an object", data)
            data = {}

        node_id = item.get("id")
        usable = True  # good enough to build a Node from
        if node_id is None:
            self.error(f"{path}.id", "required", f"node {index} has no id")
            usable = False
        elif not isinstance(node_id, str):
            self.wrong_type(f"{path}.id", f"the id of node {index}", "a string", node_id)
            usable = False
        elif not NODE_ID_PATTERN.fullmatch(node_id):
            self.error(
                f"{path}.id",
                "invalid_id",
                f"node id {node_id[:120]!r} must start with a letter or digit and contain at most 100 letters, "
                "digits, '_', '.', ':' or '-'",
            )
        name = f"node {node_id[:120]!r}" if isinstance(node_id, str) else f"node {index}"

        # React-Flow keeps its own renderer name in `type`; ours is then in data.nodeType.
        node_type = data["nodeType"] if "nodeType" in data else item.get("type")
        type_known = False
        if node_type is None:
            self.error(f"{path}.type", "required", f"{name} has no type")
            usable = False
        elif not isinstance(node_type, str):
            self.wrong_type(f"{path}.type", f"the type of {name}", "a string", node_type)
            usable = False
        elif node_type not in NODE_TYPES:
            self.error(
                f"{path}.type",
                "unknown_type",
                f"{name} has unknown type {node_type[:120]!r}; known types are {', '.join(NODE_TYPES)}",
            )
            usable = False
        else:
            type_known = True

        raw_config = item["config"] if "config" in item else data.get("config")
        config: dict = {}
        if raw_config is None:
            raw_config = {}
        if not isinstance(raw_config, dict):
            self.wrong_type(f"{path}.config", f"the config of {name}", "an object", raw_config)
            usable = False
        elif type_known:
            config = self.read_config(path, name, node_type, raw_config)

        label = item["label"] if "label" in item else data.get("label")
        if label is not None and not isinstance(label, str):
            self.wrong_type(f"{path}.label", f"the label of {name}", "a string", label)
        elif label is not None and len(label) > MAX_LABEL_LENGTH:
            self.error(
                f"{path}.label", "out_of_range", f"the label of {name} is longer than {MAX_LABEL_LENGTH} characters"
            )

        position = item.get("position")
        if position is not None and not (isinstance(position, dict) and all(map(_is_number, position.values()))):
            message = f'the position of {name} must be an object of numbers such as {{"x": 0, "y": 0}}'
            self.error(f"{path}.position", "invalid_type", message)
            position = None

        if not usable:
            return None
        return Node(
            id=node_id,
            type=node_type,
            config=config,
            label=label if isinstance(label, str) else node_id,
            position=dict(position) if position is not None else None,
        )

    def read_config(self, path: str, name: str, node_type: str, raw_config: dict) -> dict:
        allowed = NODE_TYPES[node_type]
        config: dict = {}
        for key, value in raw_config.items():
            key_path = f"{path}.config.{key}"
            spec = allowed.get(key) if isinstance(key, str) else None
            if spec is None:
                known = ", ".join(allowed) or "none"
                shown = repr(key[:120] if isinstance(key, str) else key)
                message = f"{name} ({node_type}) has unknown config key {shown}; allowed: {known}"
                self.error(key_path, "unknown_key", message)
                continue
            if self.check_config_value(key_path, f"{key} of {name}", spec, value):
                config[key] = copy.deepcopy(value)
        for key, spec in allowed.items():
            if key in raw_config:
                continue
            if spec.required:
                self.error(f"{path}.config.{key}", "required", f"{name} ({node_type}) needs config key {key!r}")
            elif spec.default is not None:
                config[key] = spec.default
        return config

    def check_config_value(self, path: str, what: str, spec: ConfigKey, value: Any) -> bool:
        """Record what is wrong with one config value; True when it is fine."""
        if value is None:
            if spec.nullable:
                return True
            self.error(path, "invalid_type", f"{what} must not be null")
            return False
        if spec.kind == "any":
            if _nesting_depth(value) > MAX_VALUE_DEPTH:
                self.error(path, "out_of_range", f"{what} is nested more than {MAX_VALUE_DEPTH} levels deep")
                return False
            return True
        expected = {"str": "a string", "int": "an integer", "number": "a number", "bool": "a boolean"}[spec.kind]
        fits = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": _is_number(value),
            "bool": isinstance(value, bool),
        }[spec.kind]
        if not fits:
            self.wrong_type(path, what, expected, value)
            return False
        if spec.kind in ("int", "number"):
            # NaN compares false with everything, so it would slip through a plain range check.
            too_low = spec.minimum is not None and not value >= spec.minimum
            too_high = spec.maximum is not None and not value <= spec.maximum
            if too_low or too_high or (isinstance(value, float) and not math.isfinite(value)):
                message = f"{what} must be between {spec.minimum} and {spec.maximum}, not {value}"
                self.error(path, "out_of_range", message)
                return False
        if spec.kind == "str":
            if spec.min_length is not None and len(value) < spec.min_length:
                self.error(path, "out_of_range", f"{what} must have at least {spec.min_length} characters")
                return False
            if spec.max_length is not None and len(value) > spec.max_length:
                self.error(path, "out_of_range", f"{what} must have at most {spec.max_length} characters")
                return False
            if spec.choices is not None and value not in spec.choices:
                self.error(
                    path, "invalid_choice", f"{what} must be one of {', '.join(spec.choices)}, not {value[:120]!r}"
                )
                return False
            if spec.is_condition:
                try:
                    self.conditions.append((path, parse_condition(value)))
                except ConditionError as exc:
                    self.error(path, "bad_condition", f"{what} does not parse: {exc}")
                    return False
        return True

    def check_duplicate_ids(self, raw_nodes: list) -> None:
        first_index: dict[str, int] = {}
        for index, item in enumerate(raw_nodes):
            node_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(node_id, str):
                continue
            if node_id in first_index:
                self.error(
                    f"nodes[{index}].id",
                    "duplicate_id",
                    f"node id {node_id[:120]!r} is already used by nodes[{first_index[node_id]}]",
                )
            else:
                first_index[node_id] = index

    # -- edges ----------------------------------------------------------------------------------------------------

    def read_edge(self, index: int, item: Any, known_ids: set[str], types: dict[str, str]) -> Edge | None:
        path = f"edges[{index}]"
        if not isinstance(item, dict):
            self.wrong_type(path, f"edge {index}", "an object", item)
            return None
        data = item.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            self.wrong_type(f"{path}.data", f"the data of edge {index}", "an object", data)
            data = {}

        usable = True
        ends: dict[str, str] = {}
        for end in ("source", "target"):
            value = item.get(end)
            if value is None:
                self.error(f"{path}.{end}", "required", f"edge {index} has no {end}")
                usable = False
            elif not isinstance(value, str):
                self.wrong_type(f"{path}.{end}", f"the {end} of edge {index}", "a node id", value)
                usable = False
            elif value not in known_ids:
                message = f"edge {index} has {end} {value[:120]!r}, which is not a node"
                self.error(f"{path}.{end}", "unknown_node", message)
                usable = False
            else:
                ends[end] = value
        source, target = ends.get("source"), ends.get("target")
        if source is not None and types.get(source) == "end":
            message = f"edge {index} leaves end node {source!r}; an end node has no outgoing edges"
            self.error(f"{path}.source", "invalid_edge", message)
            usable = False
        if target is not None and types.get(target) == "start":
            message = f"edge {index} enters start node {target!r}; a start node has no incoming edges"
            self.error(f"{path}.target", "invalid_edge", message)
            usable = False

        edge_id = item.get("id")
        if edge_id is not None and not isinstance(edge_id, str):
            self.wrong_type(f"{path}.id", f"the id of edge {index}", "a string", edge_id)
            usable = False

        condition = item["condition"] if "condition" in item else data.get("condition")
        parsed: Condition | None = None
        if isinstance(condition, str) and not condition.strip():
            condition = None  # an emptied condition box in an editor means "always"
        if condition is not None:
            if not isinstance(condition, str):
                self.wrong_type(f"{path}.condition", f"the condition of edge {index}", "a string", condition)
                usable = False
            else:
                try:
                    parsed = parse_condition(condition)
                    self.conditions.append((f"{path}.condition", parsed))
                except ConditionError as exc:
                    message = f"the condition of edge {index} does not parse: {exc}"
                    self.error(f"{path}.condition", "bad_condition", message)
                    usable = False

        branch = self.read_branch(index, item, source, types)
        if branch is False:
            usable = False
        if not usable or source is None or target is None:
            return None
        return Edge(
            source=source,
            target=target,
            condition=condition,
            branch=branch if isinstance(branch, str) else None,
            parsed=parsed,
            id=edge_id,
        )

    def read_branch(
        self, index: int, item: dict, source: str | None, types: dict[str, str]
    ) -> str | None | Literal[False]:
        """The edge's branch ("true"/"false"/None), or False when it is invalid (errors recorded)."""
        path = f"edges[{index}].branch"
        if "branch" in item and item["branch"] is not None:
            branch = item["branch"]
            if isinstance(branch, bool):
                branch = "true" if branch else "false"
            if not isinstance(branch, str):
                self.wrong_type(path, f"the branch of edge {index}", '"true" or "false"', branch)
                return False
            if branch not in BRANCHES:
                message = f'the branch of edge {index} must be "true" or "false", not {branch[:120]!r}'
                self.error(path, "invalid_choice", message)
                return False
        elif item.get("sourceHandle") in BRANCHES:
            branch = item["sourceHandle"]
        else:
            # React-Flow's other handle ids ("bottom", null, …) are layout only.
            return None
        if source is not None and types.get(source) != "conditional":
            self.error(
                path,
                "invalid_branch",
                f"edge {index} has branch {branch!r} but its source {source!r} is not a conditional node",
            )
            return False
        return branch

    def check_loop_references(self, types: dict[str, str]) -> None:
        """`loop X continue` must name a loop node of this graph."""
        for path, condition in self.conditions:
            for node_id in sorted(condition.loop_refs):
                if types.get(node_id) != "loop":
                    what = "is not a node" if node_id not in types else f"is a {types[node_id]} node, not a loop node"
                    self.error(path, "bad_condition", f"'loop {node_id} continue' names {node_id!r}, which {what}")

    # -- structure ------------------------------------------------------------------------------------------------

    def check_structure(self, nodes: list[Node], edges: list[Edge]) -> str | None:
        """Entry, reachability, exits and cycles; returns the entry node id when there is exactly one."""
        index_of = {node.id: index for index, node in enumerate(nodes)}
        successors: dict[str, list[str]] = {node.id: [] for node in nodes}
        predecessors: dict[str, list[str]] = {node.id: [] for node in nodes}
        for edge in edges:
            successors[edge.source].append(edge.target)
            predecessors[edge.target].append(edge.source)

        entry = self.find_entry(nodes, predecessors)
        if entry is not None:
            reachable = _reachable({entry}, successors)
            for node in nodes:
                if node.id not in reachable:
                    self.error(
                        f"nodes[{index_of[node.id]}]",
                        "unreachable",
                        f"node {node.id!r} cannot be reached from the entry node {entry!r}",
                    )

        exits = {node.id for node in nodes if node.type == "end" or not successors[node.id]}
        can_exit = _reachable(exits, predecessors)
        for node in nodes:
            if node.id not in can_exit:
                self.error(
                    f"nodes[{index_of[node.id]}]",
                    "no_exit",
                    f"no end node (or node without outgoing edges) can be reached from node {node.id!r}",
                )

        self.check_unguarded_cycles(nodes, edges)
        return entry

    def find_entry(self, nodes: list[Node], predecessors: dict[str, list[str]]) -> str | None:
        starts = [node.id for node in nodes if node.type == "start"]
        if len(starts) > 1:
            message = f"a graph has one start node; found {len(starts)}: {_names(starts)}"
            self.error("nodes", "multiple_entries", message)
            return None
        if starts:
            return starts[0]
        roots = [node.id for node in nodes if not predecessors[node.id]]
        if not roots:
            self.error("nodes", "no_entry", "the graph has no start node and every node has incoming edges")
            return None
        if len(roots) > 1:
            self.error(
                "nodes",
                "multiple_entries",
                f"without a start node the entry is the one node without incoming edges; found {len(roots)}: "
                f"{_names(roots)}",
            )
            return None
        return roots[0]

    def check_unguarded_cycles(self, nodes: list[Node], edges: list[Edge]) -> None:
        # A cycle is guarded by a condition/branch on one of its edges or by a loop node on it, so the cycles
        # to report are exactly those of the graph left after dropping guarded edges and loop nodes.
        loop_nodes = {node.id for node in nodes if node.type == "loop"}
        free_edges = [
            (index, edge)
            for index, edge in enumerate(edges)
            if edge.condition is None
            and edge.branch is None
            and edge.source not in loop_nodes
            and edge.target not in loop_nodes
        ]
        successors: dict[str, list[str]] = {node.id: [] for node in nodes}
        for _, edge in free_edges:
            successors[edge.source].append(edge.target)
        reach = {node.id: _reachable(set(successors[node.id]), successors) for node in nodes}
        reported: set[str] = set()
        for index, edge in free_edges:
            # The edge lies on a cycle when its source can be reached again from its target.
            if edge.source in reported or edge.source not in ({edge.target} | reach[edge.target]):
                continue
            cycle = [node.id for node in nodes if node.id in reach[edge.source] and edge.source in reach[node.id]]
            reported.update(cycle)
            self.error(
                f"edges[{index}]",
                "unguarded_cycle",
                f"the cycle through {_names(cycle)} has no edge with a condition and no loop node, so it may never end",
            )


def _reachable(starts: set[str], successors: dict[str, list[str]]) -> set[str]:
    seen = set(starts)
    stack = list(starts)
    while stack:
        for following in successors[stack.pop()]:
            if following not in seen:
                seen.add(following)
                stack.append(following)
    return seen


def _nesting_depth(value: Any) -> int:
    """How deeply lists/objects nest inside a JSON value, counted without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (list, tuple, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_VALUE_DEPTH:
                break
            children = current.values() if isinstance(current, dict) else current
            stack.extend((child, depth) for child in children)
    return deepest


def _names(node_ids: list[str]) -> str:
    return ", ".join(repr(node_id) for node_id in node_ids)
