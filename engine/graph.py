"""Workflow graphs (docs/usage.md#the-graph-format): normalization of flat and React-Flow input, validation, and the
parsed `Graph`.

`validate_graph` never raises on any JSON value; it returns a list of `{"path", "code", "message"}` errors.
Nodes and edges are validated by pydantic models (graph_input.py, node_configs.py) and every problem of every
node and edge is reported; the structural checks (entry, reachability, exits, cycles) run only once those pass,
so their errors speak about a well-formed graph.
"""
from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from engine.conditions import Condition, parse_condition
from engine.errors import InvalidInput
from engine.graph_input import (
    EdgeInput,
    GraphInput,
    error_item,
    errors_from,
    flat_edge,
    flat_node,
    known_nodes,
    node_model_for,
)
from engine.node_configs import NODE_TYPES, KnownNodes, config_as_dict

__all__ = [  # NODE_TYPES is re-exported: the node types and their config models live in node_configs.py
    "MAX_EDGES", "MAX_NODES", "NODE_TYPES", "Edge", "Graph", "GraphInvalid", "Node", "normalize_graph", "parse_graph",
    "validate_graph",
]

MAX_NODES = 100
MAX_EDGES = 200


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
    parallel: bool = False  # taken with every other parallel edge of its source that holds, at once


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    entry: str

    @cached_property
    def _nodes_by_id(self) -> dict[str, Node]:
        return {node.id: node for node in self.nodes}

    @cached_property
    def _outgoing(self) -> dict[str, tuple[Edge, ...]]:
        outgoing: dict[str, list[Edge]] = {node.id: [] for node in self.nodes}
        for edge in self.edges:
            outgoing[edge.source].append(edge)
        return {node_id: tuple(edges) for node_id, edges in outgoing.items()}

    def node(self, node_id: str) -> Node:
        return self._nodes_by_id[node_id]

    @cached_property
    def can_pause(self) -> bool:
        """Whether a run of it may stop to wait for input: a human_input node, or a Python graph (CHATTER_GRAPHS),
        which may call LangGraph's interrupt() anywhere inside."""
        return any(node.type in ("human_input", "python_graph") for node in self.nodes)

    @cached_property
    def reads_only(self) -> bool:
        """Whether its only model calls read and complete nothing: embeddings and reranks (the embeddings and the
        rerank graphs: gateway.embeddings, gateway.rerank)."""
        return any(node.type in ("embedding", "rerank") for node in self.nodes) and all(
            node.type in ("start", "end", "embedding", "rerank") for node in self.nodes)

    @cached_property
    def key(self) -> str:
        """Its normalized form as text: equal graphs, equal keys (the compiled graphs' cache)."""
        return json.dumps(self.as_dict(), sort_keys=True, default=str)

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
            optional = {"id": edge.id, "condition": edge.condition, "branch": edge.branch}
            item.update({key: value for key, value in optional.items() if value is not None})
            if edge.parallel:
                item["parallel"] = True
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
    return _read_graph(raw)[1]


_PARSED_MOST = 256
_parsed: OrderedDict[str, Graph] = OrderedDict()  # by the raw graph's text: a template's runs read it once
_parsed_lock = threading.Lock()


def parse_graph(raw: Any) -> Graph:
    """The Graph of `raw`, or GraphInvalid with every problem. A Graph is immutable, so the same raw graph gives the
    same Graph in a process: parsing it costs ten times more than writing it out as its key."""
    try:
        key = json.dumps(raw, sort_keys=True)
    except (TypeError, ValueError):
        key = None  # not JSON: _read_graph says what is wrong with it
    if key is not None:
        with _parsed_lock:
            graph = _parsed.get(key)
            if graph is not None:
                _parsed.move_to_end(key)
                return graph
    graph, errors = _read_graph(raw)
    if errors or graph is None:
        raise GraphInvalid(errors)
    if key is not None and not any(node.type == "python_graph" for node in graph.nodes):  # (their names are
        with _parsed_lock:                                                               # checked against settings)
            _parsed[key] = graph
            while len(_parsed) > _PARSED_MOST:
                _parsed.popitem(last=False)
    return graph


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking
# ---------------------------------------------------------------------------------------------------------------


def _read_graph(raw: Any) -> tuple[Graph | None, list[dict]]:
    """The graph, or None with every problem found."""
    try:
        given = GraphInput.model_validate(raw)
    except ValidationError as exc:
        return None, errors_from(exc, path="", name="the graph")
    # Checked before any node is read, and final, so a huge graph costs nothing more to reject.
    errors = [
        error_item(what, "too_large", f"the graph has {len(items)} {what}; at most {limit} are allowed")
        for what, items, limit in (("nodes", given.nodes, MAX_NODES), ("edges", given.edges, MAX_EDGES))
        if len(items) > limit
    ]
    if errors:
        return None, errors

    flat_nodes = [flat_node(item) for item in given.nodes]
    known = known_nodes(flat_nodes)
    nodes = [_read_node(index, item, known, errors) for index, item in enumerate(flat_nodes)]
    errors += _duplicate_id_errors(flat_nodes)
    edges = [_read_edge(index, flat_edge(item), known, errors) for index, item in enumerate(given.edges)]
    if errors:
        return None, errors

    complete_nodes = [node for node in nodes if node is not None]
    complete_edges = [edge for edge in edges if edge is not None]
    entry, errors = _structure_errors(complete_nodes, complete_edges)
    if errors or entry is None:
        return None, errors
    return Graph(nodes=tuple(complete_nodes), edges=tuple(complete_edges), entry=entry), []


def _read_node(index: int, item: Any, known: KnownNodes, errors: list[dict]) -> Node | None:
    """The node, or None with its problems added to `errors`."""
    fields = item if isinstance(item, dict) else {}
    node_id, node_type = fields.get("id"), fields.get("type")
    try:
        given = node_model_for(node_type).model_validate(item, context=known)
    except ValidationError as exc:
        name = f"node {node_id[:120]!r}" if isinstance(node_id, str) else f"node {index}"
        errors += errors_from(exc, path=f"nodes[{index}]", name=name, node_type=node_type)
        return None
    label = given.label if given.label is not None else given.id
    return Node(id=given.id, type=given.type, config=config_as_dict(given.config), label=label, position=given.position)


def _read_edge(index: int, item: Any, known: KnownNodes, errors: list[dict]) -> Edge | None:
    """The edge, or None with its problems added to `errors`."""
    try:
        given = EdgeInput.model_validate(item, context=known)
    except ValidationError as exc:
        errors += errors_from(exc, path=f"edges[{index}]", name=f"edge {index}")
        return None
    parsed = parse_condition(given.condition) if given.condition is not None else None  # cached by parse_condition
    return Edge(
        source=given.source,
        target=given.target,
        condition=given.condition,
        branch=given.branch,
        parsed=parsed,
        id=given.id,
        parallel=given.parallel,
    )


def _duplicate_id_errors(flat_nodes: list) -> list[dict]:
    first_index: dict[str, int] = {}
    errors = []
    for index, item in enumerate(flat_nodes):
        node_id = item.get("id") if isinstance(item, dict) else None
        if isinstance(node_id, str) and first_index.setdefault(node_id, index) != index:
            message = f"node id {node_id[:120]!r} is already used by nodes[{first_index[node_id]}]"
            errors.append(error_item(f"nodes[{index}].id", "duplicate_id", message))
    return errors


def _structure_errors(nodes: list[Node], edges: list[Edge]) -> tuple[str | None, list[dict]]:
    """Entry, reachability, exits and cycles of a graph whose nodes and edges are valid; and its entry node id."""
    successors: dict[str, list[str]] = {node.id: [] for node in nodes}
    predecessors: dict[str, list[str]] = {node.id: [] for node in nodes}
    for edge in edges:
        successors[edge.source].append(edge.target)
        predecessors[edge.target].append(edge.source)

    entry, errors = _entry(nodes, predecessors)
    if entry is not None:
        reachable = _reachable({entry}, successors)
        for index, node in enumerate(nodes):
            if node.id not in reachable:
                message = f"node {node.id!r} cannot be reached from the entry node {entry!r}"
                errors.append(error_item(f"nodes[{index}]", "unreachable", message))
    can_exit = _reachable({node.id for node in nodes if node.type == "end" or not successors[node.id]}, predecessors)
    for index, node in enumerate(nodes):
        if node.id not in can_exit:
            message = f"no end node (or node without outgoing edges) can be reached from node {node.id!r}"
            errors.append(error_item(f"nodes[{index}]", "no_exit", message))
    return entry, errors + _unguarded_cycle_errors(nodes, edges)


def _entry(nodes: list[Node], predecessors: dict[str, list[str]]) -> tuple[str | None, list[dict]]:
    """The start node, or else the one node without incoming edges."""
    starts = [node.id for node in nodes if node.type == "start"]
    if len(starts) > 1:
        message = f"a graph has one start node; found {len(starts)}: {_names(starts)}"
        return None, [error_item("nodes", "multiple_entries", message)]
    if starts:
        return starts[0], []
    roots = [node.id for node in nodes if not predecessors[node.id]]
    if not roots:
        return None, [error_item("nodes", "no_entry", "the graph has no start node and every node has incoming edges")]
    if len(roots) > 1:
        message = (
            f"without a start node the entry is the one node without incoming edges; found {len(roots)}: "
            f"{_names(roots)}"
        )
        return None, [error_item("nodes", "multiple_entries", message)]
    return roots[0], []


def _unguarded_cycle_errors(nodes: list[Node], edges: list[Edge]) -> list[dict]:
    # A cycle is guarded by a condition/branch on one of its edges or by a loop node on it, so the cycles
    # to report are exactly those of the graph left after dropping guarded edges and loop nodes.
    loop_nodes = {node.id for node in nodes if node.type == "loop"}
    free_edges = [
        (index, edge)
        for index, edge in enumerate(edges)
        if edge.condition is None and edge.branch is None and not {edge.source, edge.target} & loop_nodes
    ]
    successors: dict[str, list[str]] = {node.id: [] for node in nodes}
    for _, edge in free_edges:
        successors[edge.source].append(edge.target)
    reach = {node.id: _reachable(set(successors[node.id]), successors) for node in nodes}
    reported: set[str] = set()
    errors = []
    for index, edge in free_edges:
        # The edge lies on a cycle when its source can be reached again from its target.
        if edge.source in reported or edge.source not in ({edge.target} | reach[edge.target]):
            continue
        cycle = [node.id for node in nodes if node.id in reach[edge.source] and edge.source in reach[node.id]]
        reported.update(cycle)
        message = (
            f"the cycle through {_names(cycle)} has no edge with a condition and no loop node, so it may never end"
        )
        errors.append(error_item(f"edges[{index}]", "unguarded_cycle", message))
    return errors


def _reachable(starts: set[str], successors: dict[str, list[str]]) -> set[str]:
    seen = set(starts)
    stack = list(starts)
    while stack:
        for following in successors[stack.pop()]:
            if following not in seen:
                seen.add(following)
                stack.append(following)
    return seen


def _names(node_ids: list[str]) -> str:
    return ", ".join(repr(node_id) for node_id in node_ids)
