"""Assistants (reads): every template the user may run is an assistant whose id and graph_id are its key, every
definition one whose id and graph_id are `definition-<id>`. Their graphs, schemas and versions come from the
same rows the runs use."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from django.conf import settings

from agent_server.containment import json_contains
from chatter_project.errors import NotFound
from workflows.engine.config import CONFIG_KEYS
from workflows.engine.graph import parse_graph
from workflows.models import WorkflowDefinition, WorkflowTemplate
from workflows.selectors import definition_get, definition_list, template_get, template_list

DEFINITION_PREFIX = "definition-"

MESSAGES_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "role": {"type": "string"}, "type": {"type": "string"}, "content": {}}}}
STATE_SCHEMA = {"title": "ChatterState", "type": "object", "properties": {"messages": MESSAGES_SCHEMA}}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _config_schema() -> dict:
    properties = {}
    for name, key in CONFIG_KEYS.items():
        kinds = key.kind if isinstance(key.kind, tuple) else (key.kind,)
        types = sorted({_JSON_TYPES[kind] for kind in kinds} | ({"null"} if key.nullable else set()))
        properties[name] = {"type": types[0] if len(types) == 1 else types}
    return {"title": "ChatterConfig", "type": "object", "properties": properties}


def _template_assistant(template: WorkflowTemplate) -> dict:
    return {
        "assistant_id": template.key, "graph_id": template.key, "name": template.name,
        "description": template.description or None, "version": template.version,
        "config": {"configurable": dict(template.params or {})}, "context": dict(template.params or {}),
        "metadata": {"created_by": "system" if template.is_builtin else "user", "category": template.category,
                     "chatter_kind": "template", "template_id": str(template.pk)},
        "created_at": template.created_at, "updated_at": template.updated_at,
    }


def _definition_assistant(definition: WorkflowDefinition) -> dict:
    assistant_id = f"{DEFINITION_PREFIX}{definition.pk}"
    params = (definition.metadata or {}).get("config") or {}
    return {
        "assistant_id": assistant_id, "graph_id": assistant_id, "name": definition.name,
        "description": definition.description or None, "version": definition.version,
        "config": {"configurable": dict(params)}, "context": dict(params),
        "metadata": {"created_by": "user", "chatter_kind": "definition", "definition_id": str(definition.pk)},
        "created_at": definition.created_at, "updated_at": definition.updated_at,
    }


@dataclass(frozen=True)
class RegisteredGraph:
    """A Python graph of CHATTER_GRAPHS: every user may run it."""

    name: str

    def as_graph(self) -> dict:
        """The Chatter graph that runs it: one python_graph node (workflows.engine.python_graphs)."""
        return {"nodes": [{"id": "start", "type": "start"},
                          {"id": "graph", "type": "python_graph", "config": {"graph": self.name}},
                          {"id": "end", "type": "end"}],
                "edges": [{"source": "start", "target": "graph"}, {"source": "graph", "target": "end"}]}


def _registered_assistant(graph: RegisteredGraph) -> dict:
    path, attribute = settings.CHATTER_GRAPHS[graph.name]
    changed = datetime.fromtimestamp(Path(path).stat().st_mtime, tz=timezone.utc)
    return {"assistant_id": graph.name, "graph_id": graph.name, "name": graph.name,
            "description": f"{Path(path).name}:{attribute}", "version": 1, "config": {"configurable": {}},
            "context": {}, "metadata": {"created_by": "system", "chatter_kind": "python_graph"},
            "created_at": changed, "updated_at": changed}


def assistant_row(*, user, assistant_id: str) -> WorkflowTemplate | WorkflowDefinition | RegisteredGraph:
    """The registered graph, template or definition an assistant id names, if the user may run it; else 404."""
    if assistant_id in settings.CHATTER_GRAPHS:
        return RegisteredGraph(assistant_id)
    if assistant_id.startswith(DEFINITION_PREFIX):
        row = definition_get(user=user, definition_id=assistant_id[len(DEFINITION_PREFIX):])
    else:
        row = template_get(user=user, key_or_id=assistant_id)
    if row is None:
        raise NotFound(f"assistant {assistant_id!r} not found")
    return row


def assistant_of(row) -> dict:
    if isinstance(row, RegisteredGraph):
        return _registered_assistant(row)
    return _template_assistant(row) if isinstance(row, WorkflowTemplate) else _definition_assistant(row)


def run_target(row) -> dict:
    """What names the assistant's graph to the run services (workflows.services.runs)."""
    if isinstance(row, RegisteredGraph):
        return {"graph": row.as_graph()}
    if isinstance(row, WorkflowTemplate):
        return {"template": str(row.pk)}
    return {"definition_id": row.pk}


def assistant_id_of_execution(execution) -> str | None:
    if execution.template_id:
        return execution.template.key
    if execution.definition_id:
        return f"{DEFINITION_PREFIX}{execution.definition_id}"
    for node in (execution.graph or {}).get("nodes", []):
        if node.get("type") == "python_graph":
            return node.get("config", {}).get("graph")
    return None


def assistant_search(*, user, graph_id: str | None = None, name: str | None = None, metadata: dict | None = None,
                     limit: int = 10, offset: int = 0, sort_by: str | None = None,
                     sort_order: str | None = None) -> list[dict]:
    """Templates first (by key), then definitions (by creation), filtered, as assistants."""
    templates = template_list(user=user)
    definitions = definition_list(user=user)
    if graph_id:
        if graph_id.startswith(DEFINITION_PREFIX):
            templates = templates.none()
            found = definition_get(user=user, definition_id=graph_id[len(DEFINITION_PREFIX):])
            definitions = definitions.filter(pk=found.pk) if found else definitions.none()
        else:
            templates, definitions = templates.filter(key=graph_id), definitions.none()
    if name:
        templates, definitions = templates.filter(name__icontains=name), definitions.filter(name__icontains=name)
    registered = [RegisteredGraph(n) for n in sorted(settings.CHATTER_GRAPHS)
                  if (not graph_id or graph_id == n) and (not name or name.lower() in n.lower())]
    assistants = [_registered_assistant(graph) for graph in registered]
    if graph_id in settings.CHATTER_GRAPHS:
        templates, definitions = templates.none(), definitions.none()
    assistants += [_template_assistant(t) for t in templates.order_by("key", "created_at")]
    assistants += [_definition_assistant(d) for d in definitions.order_by("created_at")]
    if metadata:
        assistants = [a for a in assistants if json_contains(a["metadata"], metadata)]
    if sort_by in ("assistant_id", "graph_id", "name", "created_at", "updated_at"):
        assistants.sort(key=lambda a: a[sort_by], reverse=sort_order == "desc")
    return assistants[offset:offset + limit]


def assistant_graph(*, row) -> dict:
    """The graph in LangGraph's drawable JSON shape: nodes {id, type, data}, edges {source, target, conditional}."""
    if isinstance(row, RegisteredGraph):
        from workflows.engine.python_graphs import graph_load

        return graph_load(row.name).get_graph().to_json()
    graph = parse_graph(row.graph if isinstance(row, WorkflowTemplate) else {"nodes": row.nodes, "edges": row.edges})
    return {
        "nodes": [{"id": node.id, "type": "runnable",
                   "data": {"name": node.label, "chatter_type": node.type, "config": node.config}}
                  for node in graph.nodes],
        "edges": [{"source": edge.source, "target": edge.target, "conditional": edge.condition is not None,
                   **({"data": edge.condition} if edge.condition else {})} for edge in graph.edges],
    }


def assistant_schemas(*, row) -> dict:
    graph_id = assistant_of(row)["graph_id"]
    return {"graph_id": graph_id, "input_schema": STATE_SCHEMA, "output_schema": STATE_SCHEMA,
            "state_schema": STATE_SCHEMA, "config_schema": _config_schema(), "context_schema": _config_schema()}


def assistant_versions(*, row) -> list[dict]:
    """The version in force: earlier versions of a template or definition are not kept."""
    return [assistant_of(row)]
