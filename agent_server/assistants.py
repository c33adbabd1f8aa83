"""Assistants. Every graph the user may run is a "system" assistant without a row of its own: a registered Python
graph (id and graph_id: its name), a template (its key) or a definition (`definition-<id>`); their graphs, schemas
and versions come from the same rows the runs use. A user's own assistants (agent_server.models.Assistant, id: a
UUID) name one of those graphs and add a config, context and metadata, kept as numbered versions: created, changed
(a new version), set back to an earlier version, deleted, each write atomic and audited (`assistant.*`). Another
user's assistant is a 404, like a missing one."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone as django_timezone

from agent_server.models import Assistant, AssistantVersion
from audit.services import audit_record
from conversations.selectors import conversation_list
from conversations.services import conversation_delete
from core.containment import json_contains, rows_containing
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from engine.config import CONFIG_KEYS, config_errors
from engine.graph import parse_graph
from workflows.models import WorkflowDefinition, WorkflowSchedule, WorkflowTemplate
from workflows.selectors import definition_get, definition_list, template_get, template_list
from workflows.services.schedules import schedule_delete

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
        """The Chatter graph that runs it: one python_graph node (engine.python_graphs)."""
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


GraphRow = WorkflowTemplate | WorkflowDefinition | RegisteredGraph


def _graph_row(*, user, graph_id: str) -> GraphRow | None:
    """The registered graph, template or definition a graph id names, if the user may run it."""
    if graph_id in settings.CHATTER_GRAPHS:
        return RegisteredGraph(graph_id)
    if graph_id.startswith(DEFINITION_PREFIX):
        return definition_get(user=user, definition_id=graph_id[len(DEFINITION_PREFIX):])
    return template_get(user=user, key_or_id=graph_id)


def _graph_id(row: GraphRow) -> str:
    if isinstance(row, RegisteredGraph):
        return row.name
    return row.key if isinstance(row, WorkflowTemplate) else f"{DEFINITION_PREFIX}{row.pk}"


def _own_assistant(*, user, assistant_id: str) -> Assistant | None:
    """The user's own assistant of that id (None for an id that is no UUID: no query)."""
    try:
        pk = uuid.UUID(str(assistant_id))
    except ValueError:
        return None
    return Assistant.objects.select_related("current", "owner").filter(owner=user, pk=pk).first()


def assistant_row(*, user, assistant_id: str) -> Assistant | GraphRow:
    """The user's own assistant an id names, or the registered graph, template or definition (a system assistant)
    if the user may run it; else 404."""
    row = _own_assistant(user=user, assistant_id=assistant_id) or _graph_row(user=user, graph_id=assistant_id)
    if row is None:
        raise NotFound(f"assistant {assistant_id!r} not found")
    return row


def graph_of(row: Assistant | GraphRow) -> GraphRow:
    """The graph an assistant runs: a system assistant's is its own; a user's assistant's is the graph its version
    in force names, as its owner may run it now (404 once that graph is gone or no longer visible to them)."""
    if not isinstance(row, Assistant):
        return row
    graph = _graph_row(user=row.owner, graph_id=row.current.graph_id)
    if graph is None:
        raise NotFound(f"graph {row.current.graph_id!r} of assistant {row.pk} not found")
    return graph


def _user_assistant(assistant: Assistant) -> dict:
    return {**version_as_dict(assistant.current), "updated_at": assistant.updated_at,
            "created_at": assistant.created_at}


def version_as_dict(version: AssistantVersion) -> dict:
    return {"assistant_id": str(version.assistant_id), "graph_id": version.graph_id, "name": version.name,
            "description": version.description or None, "version": version.version, "config": version.config,
            "context": version.context, "metadata": version.metadata, "created_at": version.created_at}


def assistant_of(row) -> dict:
    if isinstance(row, Assistant):
        return _user_assistant(row)
    if isinstance(row, RegisteredGraph):
        return _registered_assistant(row)
    return _template_assistant(row) if isinstance(row, WorkflowTemplate) else _definition_assistant(row)


def run_target(row) -> dict:
    """What names the assistant's graph to the run services (workflows.services.runs)."""
    row = graph_of(row)
    if isinstance(row, RegisteredGraph):
        return {"graph": row.as_graph()}
    if isinstance(row, WorkflowTemplate):
        return {"template": str(row.pk)}
    return {"definition_id": row.pk}


def config_layer(*, config: dict | None, context: dict | None) -> dict:
    """The Chatter run config that a LangGraph config and context say: the `context` (LangGraph's run-time
    settings) over the Chatter keys of `config.configurable` (its other keys are LangGraph's own, such as
    thread_id)."""
    configurable = (config or {}).get("configurable") or {}
    layer = {key: value for key, value in configurable.items() if key in CONFIG_KEYS}
    layer.update(context or {})
    return layer


def assistant_config(row) -> dict:
    """What an assistant puts under a run's own config: a user's assistant its version's config and context (its
    graph's own defaults, such as a template's params, stay under both); a system assistant nothing."""
    if isinstance(row, Assistant):
        return config_layer(config=row.current.config, context=row.current.context)
    return {}


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
    """Registered graphs, templates (by key), definitions, then the user's own assistants (by creation), filtered,
    as assistants."""
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
    own = Assistant.objects.filter(owner=user).select_related("current")
    if graph_id:
        own = own.filter(current__graph_id=graph_id)
    if name:
        own = own.filter(current__name__icontains=name)
    assistants += [_user_assistant(a) for a in rows_containing(own, field="current__metadata", pattern=metadata)
                   .order_by("created_at", "pk")]
    if metadata:
        assistants = [a for a in assistants if json_contains(a["metadata"], metadata)]
    if sort_by in ("assistant_id", "graph_id", "name", "created_at", "updated_at"):
        assistants.sort(key=lambda a: a[sort_by], reverse=sort_order == "desc")
    return assistants[offset:offset + limit]


def json_graph_of(row: WorkflowTemplate | WorkflowDefinition) -> dict:
    """A template's or definition's graph, as Chatter's JSON graph format has it."""
    return row.graph if isinstance(row, WorkflowTemplate) else {"nodes": row.nodes, "edges": row.edges}


def assistant_graph(*, row) -> dict:
    """The graph in LangGraph's drawable JSON shape: nodes {id, type, data}, edges {source, target, conditional}."""
    row = graph_of(row)
    if isinstance(row, RegisteredGraph):
        from engine.python_graphs import graph_load

        return graph_load(row.name).get_graph().to_json()
    graph = parse_graph(json_graph_of(row))
    return {
        "nodes": [{"id": node.id, "type": "runnable",
                   "data": {"name": node.label, "chatter_type": node.type, "config": node.config}}
                  for node in graph.nodes],
        "edges": [{"source": edge.source, "target": edge.target, "conditional": edge.condition is not None,
                   **({"data": edge.condition} if edge.condition else {})} for edge in graph.edges],
    }


def assistant_schemas(*, row) -> dict:
    graph_id = assistant_of(row)["graph_id"]
    graph = graph_of(row)  # 404 when the graph of a user's assistant is gone
    if isinstance(graph, RegisteredGraph):
        return {"graph_id": graph_id, **_registered_schemas(graph.name)}
    return {"graph_id": graph_id, "input_schema": STATE_SCHEMA, "output_schema": STATE_SCHEMA,
            "state_schema": STATE_SCHEMA, "config_schema": _config_schema(), "context_schema": _config_schema()}


def _registered_schemas(name: str) -> dict:
    """A registered graph's own schemas, as LangGraph gives them; one it cannot make (its state type, a factory's
    needs) is null, as the stock server leaves what it cannot read."""
    from engine.python_graphs import graph_load

    graph = _schema(lambda: graph_load(name))
    if graph is None:
        return {"input_schema": None, "output_schema": None, "state_schema": None, "config_schema": None,
                "context_schema": None}
    return graph_schemas(graph)


def _schema(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 - the graph's own code and types, whatever they raise
        return None


def _state_jsonschema(graph) -> dict:
    """A compiled graph's state: each channel its values stream (its state's keys, whatever its input and output
    schemas leave out), typed by what an update of it takes (any value when that type has no JSON schema)."""
    from pydantic import Field, TypeAdapter, create_model

    fields = {}
    for index, name in enumerate(graph.stream_channels_list):
        kind = graph.channels[name].UpdateType
        if _schema(TypeAdapter(kind).json_schema) is None:
            kind = Any
        fields[f"channel_{index}"] = (kind, Field(None, alias=name, title=name.replace("_", " ").title()))
    return create_model(graph.get_name("State"), **fields).model_json_schema(by_alias=True)


def graph_schemas(graph) -> dict:
    """A compiled graph's (or subgraph's) schemas, as LangGraph gives them; one it cannot make is null."""
    return {"input_schema": _schema(graph.get_input_jsonschema),
            "output_schema": _schema(graph.get_output_jsonschema),
            "state_schema": _schema(lambda: _state_jsonschema(graph)),
            "config_schema": _schema(graph.get_config_jsonschema),
            "context_schema": _schema(graph.get_context_jsonschema)}


def assistant_subgraphs(*, row, namespace: str | None = None, recurse: bool = False) -> dict:
    """The subgraphs of the assistant's graph, as the stock server answers them: each one's namespace (a nested
    one's `outer|inner`, with `recurse`) and its schemas; `namespace`: only that subgraph (LangGraph's own
    get_subgraphs). A graph of Chatter's own nodes has none (a python_graph node runs its graph as one node)."""
    from engine.python_graphs import graph_load

    graph = graph_of(row)  # 404 when the graph of a user's assistant is gone
    if not isinstance(graph, RegisteredGraph):
        return {}
    compiled = _schema(lambda: graph_load(graph.name))
    if compiled is None:  # a graph that cannot be built outside a run: nothing to read its subgraphs from
        return {}
    return {found: graph_schemas(subgraph)
            for found, subgraph in compiled.get_subgraphs(namespace=namespace, recurse=recurse)}


def assistant_versions(*, row, metadata: dict | None = None, limit: int = 10, offset: int = 0) -> list[dict]:
    """A user's assistant's versions, newest first (those whose metadata contains `metadata`); a system assistant's
    is the version in force (earlier versions of a template or definition are not kept)."""
    if isinstance(row, Assistant):
        versions = rows_containing(row.versions.all(), field="metadata", pattern=metadata).order_by("-version")
        return [version_as_dict(version) for version in versions[offset:offset + limit]]
    found = [assistant_of(row)]
    return [a for a in found if not metadata or json_contains(a["metadata"], metadata)][offset:offset + limit]


# Writes of a user's own assistants ---------------------------------------------------------------------------

def _graph_id_checked(*, user, graph_id: str) -> str:
    """The graph id as assistants store it (a template named by its id becomes its key): 404 unless it names a
    graph the user may run."""
    row = _graph_row(user=user, graph_id=graph_id)
    if row is None:
        raise NotFound(f"graph {graph_id!r} not found")
    return _graph_id(row)


def _config_checked(*, config: dict, context: dict, graph_id: str) -> None:
    """Refuse (before any write) a config or context a run of the assistant would refuse (engine.config),
    and a `configurable` that is not an object. A registered graph's context is the graph's own (any keys)."""
    if not isinstance(config.get("configurable", {}), dict):
        raise InvalidInput("config.configurable must be an object", details=[
            {"path": "config.configurable", "code": "invalid_type", "message": "configurable must be an object"}])
    own_context = graph_id in settings.CHATTER_GRAPHS
    if own_context:  # a graph none of its runs could run (a factory asking for a ServerRuntime): refused as they are
        from engine.graph import parse_graph

        parse_graph(RegisteredGraph(graph_id).as_graph())
    errors = config_errors(config_layer(config=config, context=None if own_context else context))
    if errors:
        raise InvalidInput("invalid assistant configuration", details=errors)


def _summary(version: AssistantVersion) -> dict:
    return {"graph_id": version.graph_id, "name": version.name, "version": version.version}


def own_assistant(row) -> Assistant:
    """The user's assistant to change; a system assistant is its graph's own (change the template or definition
    through /api/v1/): 403."""
    if not isinstance(row, Assistant):
        raise Forbidden(f"assistant {assistant_of(row)['assistant_id']!r} is its graph's own (a system assistant): "
                        "it cannot be changed or deleted here")
    return row


def assistant_create(*, owner, graph_id: str, assistant_id: uuid.UUID | None = None, name: str | None = None,
                     description: str | None = None, config: dict | None = None, context: dict | None = None,
                     metadata: dict | None = None, if_exists: str | None = None) -> Assistant:
    """A new assistant at version 1. An id already taken: 409, or with if_exists="do_nothing" the existing
    assistant when it is the caller's (another user's stays a 409: it is not revealed as theirs)."""
    graph_id = _graph_id_checked(user=owner, graph_id=graph_id)
    config, context = config or {}, context or {}
    _config_checked(config=config, context=context, graph_id=graph_id)
    if assistant_id is not None:
        existing = Assistant.objects.select_related("current", "owner").filter(pk=assistant_id).first()
        if existing is not None:
            if if_exists == "do_nothing" and existing.owner_id == owner.pk:
                return existing
            raise Conflict("an assistant with this id already exists")
    try:
        with transaction.atomic():
            assistant = Assistant.objects.create(id=assistant_id or uuid.uuid4(), owner=owner)
            assistant.current = AssistantVersion.objects.create(
                assistant=assistant, version=1, graph_id=graph_id, name=name or "Untitled",
                description=description or "", config=config, context=context, metadata=metadata or {})
            assistant.save(update_fields=["current"])
            audit_record(action="assistant.created", actor=owner, target=assistant, data=_summary(assistant.current))
    except IntegrityError:
        raise Conflict("an assistant with this id already exists") from None  # created meanwhile
    return assistant


def assistant_update(*, assistant: Assistant, actor, graph_id: str | None = None, config: dict | None = None,
                     context: dict | None = None, metadata: dict | None = None, name: str | None = None,
                     description: str | None = None) -> Assistant:
    """A new version, made the one in force: what is given replaces the version in force's (metadata is merged
    into it), the rest is kept."""
    if graph_id is not None:
        graph_id = _graph_id_checked(user=actor, graph_id=graph_id)
    with transaction.atomic():
        locked = Assistant.objects.select_for_update().get(pk=assistant.pk)
        base = AssistantVersion.objects.get(pk=locked.current_id)
        version = AssistantVersion(
            assistant=locked, version=locked.versions.aggregate(latest=Max("version"))["latest"] + 1,
            graph_id=graph_id or base.graph_id, name=name or base.name,
            description=base.description if description is None else description,
            config=base.config if config is None else config, context=base.context if context is None else context,
            metadata={**base.metadata, **(metadata or {})})
        _config_checked(config=version.config, context=version.context, graph_id=version.graph_id)
        version.save()
        locked.current, locked.updated_at = version, django_timezone.now()
        locked.save(update_fields=["current", "updated_at"])
        changed = [field for field, value in (("graph_id", graph_id), ("config", config), ("context", context),
                                              ("metadata", metadata), ("name", name), ("description", description))
                   if value is not None]
        audit_record(action="assistant.updated", actor=actor, target=locked,
                     data={**_summary(version), "fields": changed})
    return _reread(locked)


def assistant_set_latest(*, assistant: Assistant, actor, version: int) -> Assistant:
    """Put one of the assistant's versions back in force (404 for a version it does not have)."""
    with transaction.atomic():
        locked = Assistant.objects.select_for_update().get(pk=assistant.pk)
        chosen = locked.versions.filter(version=version).first()
        if chosen is None:
            raise NotFound(f"version {version} of assistant {assistant.pk} not found")
        locked.current, locked.updated_at = chosen, django_timezone.now()
        locked.save(update_fields=["current", "updated_at"])
        audit_record(action="assistant.version_set", actor=actor, target=locked, data=_summary(chosen))
    return _reread(locked)


def _reread(assistant: Assistant) -> Assistant:
    return Assistant.objects.select_related("current", "owner").get(pk=assistant.pk)


def assistant_delete(*, assistant: Assistant, actor, delete_threads: bool = False) -> None:
    """Delete the assistant and its versions, and its crons with it. Its runs stay (their tokens and cost are part
    of the record) and keep its id. With `delete_threads`, the owner's threads whose metadata names it go too (a
    thread with a run in progress: 409, and nothing is deleted)."""
    assistant_id = str(assistant.pk)
    with transaction.atomic():
        if delete_threads:
            threads = rows_containing(conversation_list(user=actor), field="metadata",
                                      pattern={"assistant_id": assistant_id})
            for conversation in threads:
                conversation_delete(conversation=conversation, actor=actor)
        for schedule in WorkflowSchedule.objects.filter(owner_id=assistant.owner_id,
                                                        agent_cron__assistant_id__iexact=assistant_id):
            schedule_delete(schedule=schedule)
        audit_record(action="assistant.deleted", actor=actor, target=assistant,
                     data={**_summary(assistant.current), "delete_threads": delete_threads})
        assistant.delete()
