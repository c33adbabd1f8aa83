"""Writes of templates: built-ins seeded at start, users' own templates created, changed and deleted."""
from __future__ import annotations

import re
import uuid

from django.db import IntegrityError, transaction
from django.db.models import Q

from audit.services import audit_record
from core.errors import Forbidden, InvalidInput, NotFound
from engine.config import config_errors
from engine.graph import Graph, parse_graph
from prompts.selectors import prompt_get, prompt_reference_check
from workflows.builtins import BUILTIN_TEMPLATES
from workflows.knowledge_search import collections_check
from workflows.models import WorkflowTemplate
from workflows.selectors import template_get

_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


def graph_prompts_check(graph: Graph, *, owner, kept: bool = False) -> None:
    """Every stored prompt the graph's model nodes name is one `owner` may fetch (and every knowledge collection its
    retrieval nodes name one they see: graph_collections_check): a 400 naming the node now, not a
    failed run later; another user's prompt is answered as a missing one. A run (the default) needs the version or
    label too; a graph `kept` to run later (a definition, a template, a schedule) only the prompt: its label or
    version is fetched when it runs, and may be made meanwhile."""
    for index, node in enumerate(graph.nodes):
        reference = node.config.get("prompt") if node.type == "model" else None
        if not reference:
            continue
        try:
            if kept:
                prompt_get(user=owner, name=reference["name"])
            else:
                prompt_reference_check(user=owner, name=reference["name"], label=reference.get("label"),
                                       version=reference.get("version"))
        except NotFound as missing:
            raise InvalidInput(f"node {node.id!r}: {missing.message}", details=[
                {"path": f"nodes[{index}].config.prompt", "code": "not_found", "message": missing.message}]) from None
    graph_collections_check(graph, owner=owner)


def graph_collections_check(graph: Graph, *, owner) -> None:
    """Every knowledge collection the graph's retrieval nodes name is one `owner` sees (their own or a shared one):
    a 400 naming the node now, not a failed run later; another user's collection is answered as a missing one. The
    run checks again, as its owner (workflows.knowledge_search)."""
    for index, node in enumerate(graph.nodes):
        refs = node.config.get("collections") if node.type == "retrieval" else None
        if not refs:
            continue
        try:
            collections_check(user=owner, refs=refs)
        except InvalidInput as missing:
            raise InvalidInput(f"node {node.id!r}: {missing.message}", details=[
                {"path": f"nodes[{index}].config.collections", "code": "not_found", "message": missing.message}]
            ) from None


def is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# --- built-ins ------------------------------------------------------------------------------------------
def builtins_seed() -> None:
    """Idempotent: built-in templates, updated in place (version +1 when the graph changes). Their analytics
    row is made when their first run ends; prices are seeded by analytics. One read when all are current."""
    stored = {template.key: template for template in WorkflowTemplate.objects.filter(
        is_builtin=True, key__in=[spec["key"] for spec in BUILTIN_TEMPLATES])}
    for spec in BUILTIN_TEMPLATES:
        parse_graph(spec["graph"])  # a broken built-in must fail loudly, not at a user's first run
        template = stored.get(spec["key"])
        if template is None:
            WorkflowTemplate.objects.create(
                key=spec["key"], is_builtin=True, is_public=True,
                **{k: spec[k] for k in ("name", "category", "description", "params", "graph")})
        elif template.graph != spec["graph"] or template.params != spec["params"]:
            template.graph, template.params = spec["graph"], spec["params"]
            template.name, template.description = spec["name"], spec["description"]
            template.version += 1
            template.save()


# --- templates ------------------------------------------------------------------------------------------
TEMPLATE_EDITABLE = ("name", "description", "category", "params", "graph", "is_public")


# The key rule (docs/api/rest.md): a key names one template for a user: their own, else the built-in or public
# one. Keys are unique per owner and among shared (built-in and public) templates. A new key may not be one the
# user can already see, so at creation their own hides nothing; and a key is checked only against what the user
# may see (their own and the shared ones), so no answer tells of another user's private key.
def _key_taken(*, key: str, owner) -> dict | None:
    taken = WorkflowTemplate.objects.filter(key=key)
    if taken.filter(owner=owner).exists():
        return {"path": "key", "code": "unique", "message": f"you have a template with key {key!r}"}
    if taken.filter(Q(is_public=True) | Q(owner__isnull=True)).exists():
        return {"path": "key", "code": "unique", "message": f"a built-in or public template has key {key!r}"}
    return None


def _template_errors(*, owner=None, key: str | None = None, params: dict | None = None) -> list[dict]:
    errors = []
    if key is not None:
        if not _KEY.fullmatch(key):
            errors.append({"path": "key", "code": "invalid", "message": "key must be a slug: a-z, 0-9, - and _"})
        elif (taken := _key_taken(key=key, owner=owner)) is not None:
            errors.append(taken)
    for error in config_errors(params) if params is not None else []:
        errors.append({**error, "path": f"params.{error['path']}" if error["path"] else "params"})
    return errors


def _key_clash(key: str) -> InvalidInput:
    """Two writes raced for one key and the database refused the second (the constraints of the key rule)."""
    return InvalidInput("invalid template", details=[
        {"path": "key", "code": "unique", "message": f"key {key!r} was just taken; try again or pick another"}])


def template_check(*, owner, template: WorkflowTemplate | None = None, **values) -> dict | None:
    """What template_create (no `template`) or template_update (a change of `template`) would refuse of `values`
    (the key rule, `params` as run config, sharing a key another shared template has, the graph parsed with the
    prompts and collections it names), raised as one InvalidInput naming each; else the graph given, normalized
    (None when none is given). The admin's form shows the same refusals."""
    new = template is None
    errors = _template_errors(owner=owner, key=values.get("key") if new else None,
                              params=(values.get("params") or {}) if new else values.get("params"))
    # Shared now: its key must be unique among the shared ones.
    if not new and values.get("is_public") and not template.is_public:
        shared = WorkflowTemplate.objects.filter(Q(is_public=True) | Q(owner__isnull=True), key=template.key)
        if shared.exclude(pk=template.pk).exists():
            errors.append({"path": "is_public", "code": "unique",
                           "message": f"a public template has key {template.key!r}"})
    if errors:
        raise InvalidInput("invalid template", details=errors)
    if "graph" not in values:
        return None
    parsed = parse_graph(values["graph"])
    graph_prompts_check(parsed, owner=owner, kept=True)
    return parsed.as_dict()


def template_create(*, owner, key: str, name: str, graph, description: str = "", category: str = "general",
                    params: dict | None = None, is_public: bool = False, actor=None) -> WorkflowTemplate:
    """A user's own template: the key follows the key rule above, the graph is validated and normalized,
    `params` are run config defaults validated like any config (template_check). `actor`: who made it (the owner
    by default; staff in the admin)."""
    graph = template_check(owner=owner, key=key, params=params or {}, graph=graph)
    with transaction.atomic():
        try:
            with transaction.atomic():
                template = WorkflowTemplate.objects.create(
                    key=key, name=name[:255], description=description, category=category[:64] or "general",
                    owner=owner, params=params or {}, graph=graph, is_public=is_public,
                )
        except IntegrityError as exc:
            raise _key_clash(key) from exc
        audit_record(action="template.created", actor=actor or owner, target=template,
                     data={"key": key, "version": template.version, "is_public": is_public})
    return template


def _template_owned(template: WorkflowTemplate, actor, *, as_staff: bool) -> None:
    if template.is_builtin:
        raise Forbidden("built-in templates are read-only")
    if template.owner_id != actor.pk and not (as_staff and actor.is_staff):
        raise Forbidden("only its owner may change a template")


def template_update(*, template: WorkflowTemplate, actor, as_staff: bool = False, **changes) -> WorkflowTemplate:
    """Change a user's template; a change of its graph is validated and bumps the version. `as_staff`: staff
    change it in the admin, whoever owns it (a built-in stays read-only)."""
    _template_owned(template, actor, as_staff=as_staff)
    unknown = sorted(set(changes) - set(TEMPLATE_EDITABLE))
    if unknown:
        raise InvalidInput("these fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} cannot be changed"} for name in unknown])
    graph = template_check(owner=template.owner, template=template, **changes)
    changes.pop("graph", None)
    with transaction.atomic():
        locked = WorkflowTemplate.objects.select_for_update().get(pk=template.pk)
        if graph is not None and graph != locked.graph:
            locked.graph = graph
            locked.version += 1
        for field, value in changes.items():
            setattr(locked, field, value)
        try:
            with transaction.atomic():
                locked.save()
        except IntegrityError as exc:  # shared at the same moment as another template with its key
            raise _key_clash(locked.key) from exc
        audit_record(action="template.updated", actor=actor, target=locked,
                     data={"key": locked.key, "version": locked.version,
                           "fields": sorted([*changes, *(["graph"] if graph is not None else [])])})
    return locked


def template_delete(*, template: WorkflowTemplate, actor, as_staff: bool = False) -> None:
    """Past runs keep their figures (their template becomes null); the template's analytics go with it. `as_staff`:
    staff delete it in the admin, whoever owns it."""
    _template_owned(template, actor, as_staff=as_staff)
    with transaction.atomic():
        audit_record(action="template.deleted", actor=actor, target=template,
                     data={"key": template.key, "version": template.version})
        template.delete()



def visible_template(*, owner, key_or_id) -> WorkflowTemplate:
    """The template a run, schedule or copy names (by id, or by key under the key rule), or NotFound."""
    template = template_get(user=owner, key_or_id=key_or_id)
    if template is None:
        raise NotFound(f"template {key_or_id!r} not found")
    return template


