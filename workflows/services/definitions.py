"""Writes of workflow definitions: created (from raw nodes or a template), changed (version +1), deleted."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from audit.services import audit_record
from core.errors import Forbidden, InvalidInput, NotFound
from engine.graph import parse_graph
from workflows.models import WorkflowDefinition, WorkflowTemplate
from workflows.services.templates import graph_prompts_check, is_uuid, visible_template

# --- definitions ----------------------------------------------------------------------------------------
DEFINITION_EDITABLE = ("name", "description", "nodes", "edges", "metadata", "is_public")


def definition_create(*, owner, name: str, nodes, edges, description: str = "", metadata: dict | None = None,
                      template: WorkflowTemplate | None = None, is_public: bool = False) -> WorkflowDefinition:
    parsed = parse_graph({"nodes": nodes, "edges": edges})
    graph_prompts_check(parsed, owner=owner, kept=True)
    graph = parsed.as_dict()
    if not name or not name.strip():
        raise InvalidInput("a definition needs a name", details=[{"path": "name", "code": "required",
                                                                  "message": "name is required"}])
    with transaction.atomic():
        definition = WorkflowDefinition.objects.create(
            owner=owner, name=name[:255], description=description, nodes=graph["nodes"], edges=graph["edges"],
            metadata=metadata or {}, template=template, is_public=is_public,
        )
        audit_record(action="definition.created", actor=owner, target=definition,
                     data={"name": definition.name, "version": 1, "template": template.key if template else None})
    return definition


def definition_from_template(*, owner, template: str, name: str | None = None) -> WorkflowDefinition:
    """A definition copied from a template the user may see (built-in, public or their own)."""
    source = visible_template(owner=owner, key_or_id=template)
    return definition_create(
        owner=owner, name=name or source.name, description=source.description, nodes=source.graph["nodes"],
        edges=source.graph["edges"], template=source,
        metadata={"from_template": {"key": source.key, "version": source.version}},
    )


def definition_update(*, definition: WorkflowDefinition, actor=None, as_staff: bool = False,
                      **changes) -> WorkflowDefinition:
    """Apply changes; a change of nodes or edges is validated and bumps the version. `as_staff`: staff change it in
    the admin, whoever owns it."""
    if actor is not None and definition.owner_id != actor.pk and not (as_staff and actor.is_staff):
        raise Forbidden("only its owner may change a definition")
    unknown = sorted(set(changes) - set(DEFINITION_EDITABLE))
    if unknown:
        raise InvalidInput("these fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} cannot be changed"} for name in unknown])
    if "name" in changes and not (changes["name"] or "").strip():
        raise InvalidInput("a definition needs a name", details=[{"path": "name", "code": "required",
                                                                  "message": "name is required"}])
    nodes, edges = changes.pop("nodes", definition.nodes), changes.pop("edges", definition.edges)
    parsed = parse_graph({"nodes": nodes, "edges": edges})
    if nodes is not definition.nodes:  # a new graph: the prompts it names are checked (the old ones ran already)
        graph_prompts_check(parsed, owner=definition.owner, kept=True)
    graph = parsed.as_dict()
    with transaction.atomic():
        locked = WorkflowDefinition.objects.select_for_update().get(pk=definition.pk)
        graph_changed = graph["nodes"] != locked.nodes or graph["edges"] != locked.edges
        if graph_changed:
            locked.nodes, locked.edges = graph["nodes"], graph["edges"]
            locked.version += 1
        for field, value in changes.items():
            setattr(locked, field, value)
        locked.save()
        audit_record(action="definition.updated", actor=actor or locked.owner, target=locked,
                     data={"version": locked.version, "graph_changed": graph_changed, "fields": sorted(changes)})
    return locked


def definition_delete(*, definition: WorkflowDefinition, actor, as_staff: bool = False) -> None:
    """Past runs keep their figures and the version they ran (their definition becomes null); schedules of
    the definition go with it. `as_staff`: staff delete it in the admin, whoever owns it."""
    if definition.owner_id != actor.pk and not (as_staff and actor.is_staff):
        raise Forbidden("only its owner may delete a definition")
    with transaction.atomic():
        audit_record(action="definition.deleted", actor=actor, target=definition,
                     data={"name": definition.name, "version": definition.version})
        definition.delete()



def visible_definition(*, owner, definition_id) -> WorkflowDefinition:
    if not is_uuid(definition_id):
        raise NotFound("definition not found")
    definition = WorkflowDefinition.objects.filter(Q(owner=owner) | Q(is_public=True), pk=definition_id).first()
    if definition is None:
        raise NotFound("definition not found")
    return definition


