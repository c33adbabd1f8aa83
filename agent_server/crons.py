"""Crons of the Agent Server API: each is a Chatter schedule (workflows.services.schedules; the same row as
/api/v1/schedules/, started by the same django-q2 runner), with what LangGraph says of it besides in an AgentCron.
A thread's cron fires chat turns in that thread; a stateless one fires runs without a thread (on_run_completed
"delete", the default: nothing is kept to delete) or, with "keep", chat turns each in a new thread."""
from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from agent_server.assistants import DEFINITION_PREFIX, assistant_config, assistant_row, run_target
from agent_server.bodies import CronCreate, CronSearch, CronUpdate
from agent_server.messages import input_messages, turn_of
from agent_server.models import AgentCron
from agent_server.runs import chatter_config, graph_request, recursion_limit_asked
from agent_server.threads import owned_row, thread_get
from core.containment import json_contains
from core.errors import InvalidInput, NotFound
from engine.config import CONFIG_KEYS
from workflows.models import WorkflowSchedule
from workflows.services.schedules import schedule_create, schedule_delete, schedule_update


def _as_json(data) -> dict:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _turn(body, *, chat: bool, assistant, message: str | None = None) -> tuple[dict, dict]:
    """The schedule's input and config from a cron's input (its last user message is the turn) and config, over
    its assistant's own (as it is when the cron is made or changed: a later version of the assistant does not
    reach the schedule); its recursion_limit (the cron's over its assistant's) holds each firing's graph as it holds
    a run's (agent_server.runs.recursion_limit_asked). `assistant`: its row, None once it is gone; `message`: the
    turn the cron keeps when its input is not sent."""
    if message is None:
        message, system_prompt = turn_of(input_messages(body.input))
    else:
        system_prompt = None
    if chat and not message:
        raise InvalidInput("a cron on a thread (or one that keeps its threads) needs a user message in "
                           "input.messages")
    limit = recursion_limit_asked(body, assistant=assistant)
    return ({"message": message} if message else {}) | ({"graph_request": limit} if limit else {}), chatter_config(
        body, system_prompt, assistant=assistant_config(assistant) if assistant is not None else {})


def _graph_turn(body, *, assistant) -> tuple[dict, dict]:
    """A registered graph's firing: the graph's input, configurable and context as a run of it takes them
    (agent_server.runs.graph_request), and the Chatter keys of its configurable as the run's config."""
    configurable = (body.config or {}).get("configurable") or {}
    return ({"graph_request": _as_json(graph_request(body, assistant=assistant))},
            {key: value for key, value in configurable.items() if key in CONFIG_KEYS})


def cron_create(*, owner, body: CronCreate, thread_id=None) -> WorkflowSchedule:
    refused = body.refused()
    if refused:
        raise InvalidInput(f"not supported for crons: {', '.join(refused)}")
    if thread_id is not None and body.on_run_completed is not None:
        raise InvalidInput("on_run_completed is for stateless crons (a thread's cron keeps its thread)")
    assistant = assistant_row(user=owner, assistant_id=body.assistant_id)
    target = run_target(assistant)
    conversation = thread_get(user=owner, thread_id=thread_id) if thread_id is not None else None
    if "graph" in target:  # a registered graph: its own input, on its thread (or none: each firing stateless)
        chat = False
        run_input, config = _graph_turn(body, assistant=assistant)
    else:
        chat = conversation is not None or body.on_run_completed == "keep"
        run_input, config = _turn(body, chat=chat, assistant=assistant)
    with transaction.atomic():
        schedule = schedule_create(
            owner=owner, name=f"{body.assistant_id} cron"[:255], cron=body.schedule,
            timezone_name=body.timezone or "UTC", run_input=run_input, config=config, enabled=body.enabled,
            chat=chat, conversation_id=conversation.pk if conversation else None, webhook=body.webhook or "",
            ends_at=body.end_time, **target)
        AgentCron.objects.create(schedule=schedule, assistant_id=body.assistant_id, metadata=body.metadata or {},
                                 payload=_as_json(body.model_dump(exclude_none=True)),
                                 on_run_completed="" if conversation else (body.on_run_completed or "delete"))
    return cron_get(user=owner, cron_id=schedule.pk)


def cron_get(*, user, cron_id) -> WorkflowSchedule:
    """The user's cron (any of their schedules); another user's is a 404 like a missing one."""
    return owned_row(_crons(user=user), cron_id, what="cron")


def _crons(*, user):
    return WorkflowSchedule.objects.filter(owner=user).select_related("template", "definition", "agent_cron")


def _agent_cron(schedule: WorkflowSchedule) -> AgentCron | None:
    try:
        return schedule.agent_cron
    except AgentCron.DoesNotExist:
        return None


def cron_update(*, schedule: WorkflowSchedule, body: CronUpdate) -> WorkflowSchedule:
    """Change what was sent; the rest stays. What the cron runs (its assistant and thread) is fixed."""
    refused = body.refused()
    if refused:
        raise InvalidInput(f"not supported for crons: {', '.join(refused)}")
    sent = body.model_fields_set
    changes = {}
    for name, field in (("schedule", "cron"), ("timezone", "timezone"), ("enabled", "enabled"),
                        ("webhook", "webhook")):
        if name in sent and getattr(body, name) is not None:
            changes[field] = getattr(body, name)
    if "end_time" in sent:
        changes["ends_at"] = body.end_time
    agent = _agent_cron(schedule)
    if "on_run_completed" in sent and body.on_run_completed is not None:
        if schedule.conversation_id:
            raise InvalidInput("on_run_completed is for stateless crons (a thread's cron keeps its thread)")
        changes["chat"] = body.on_run_completed == "keep"
    if sent & {"input", "config", "context"}:
        if schedule.graph is not None:  # a registered graph's cron: the graph's input, configurable and context
            run_input, config = _graph_turn(body, assistant=None)
            if "input" not in sent:  # only its config changes: the graph's input stays
                run_input["graph_request"]["graph_input"] = (schedule.input.get("graph_request") or {}).get(
                    "graph_input")
            changes["input"] = run_input
        else:
            run_input, config = _turn(body, chat=changes.get("chat", schedule.chat),
                                      assistant=_assistant_now(schedule, agent),
                                      message=None if "input" in sent else schedule.input.get("message"))
            # What was not sent stays: its turn (input), its recursion_limit (config).
            turn = {key: value for key, value in (run_input if "input" in sent else schedule.input).items()
                    if key != "graph_request"}
            limit = (run_input if "config" in sent else schedule.input).get("graph_request")
            changes["input"] = {**turn, **({"graph_request": limit} if limit else {})}
        if sent & {"config", "context"}:
            changes["config"] = config
    with transaction.atomic():
        schedule = schedule_update(schedule=schedule, **changes)
        if agent is None:
            agent = AgentCron(schedule=schedule, assistant_id=_assistant_id(schedule))
        if "metadata" in sent and body.metadata is not None:
            agent.metadata = body.metadata
        if "on_run_completed" in sent and body.on_run_completed is not None:
            agent.on_run_completed = body.on_run_completed
        agent.payload = {**agent.payload, **_as_json(body.model_dump(include=sent))}
        agent.save()
    return cron_get(user=schedule.owner, cron_id=schedule.pk)


def _assistant_now(schedule: WorkflowSchedule, agent: AgentCron | None):
    """The cron's assistant as it is now (None once it is gone)."""
    try:
        return assistant_row(user=schedule.owner, assistant_id=agent.assistant_id if agent else _assistant_id(schedule))
    except NotFound:
        return None


def cron_delete(*, schedule: WorkflowSchedule) -> None:
    schedule_delete(schedule=schedule)


def _assistant_id(schedule: WorkflowSchedule) -> str:
    if schedule.template_id:
        return schedule.template.key
    return f"{DEFINITION_PREFIX}{schedule.definition_id}"


def cron_as_dict(schedule: WorkflowSchedule) -> dict:
    """A schedule as LangGraph's Cron (one made through /api/v1/ too: its payload is its input and config)."""
    agent = _agent_cron(schedule)
    next_run = schedule.next_run_at if schedule.enabled else None
    if next_run is not None and schedule.ends_at is not None and next_run >= schedule.ends_at:
        next_run = None
    on_completed = None
    if not schedule.conversation_id:
        on_completed = (agent.on_run_completed if agent and agent.on_run_completed else None) or (
            "keep" if schedule.chat else "delete")
    return {
        "cron_id": str(schedule.pk), "assistant_id": agent.assistant_id if agent else _assistant_id(schedule),
        "thread_id": str(schedule.conversation_id) if schedule.conversation_id else None,
        "on_run_completed": on_completed, "end_time": schedule.ends_at, "schedule": schedule.cron,
        "timezone": schedule.timezone, "created_at": schedule.created_at, "updated_at": schedule.updated_at,
        "payload": agent.payload if agent else {"input": schedule.input, "config": schedule.config},
        "user_id": str(schedule.owner_id), "next_run_date": next_run, "metadata": agent.metadata if agent else {},
        "enabled": schedule.enabled,
    }


def cron_search(*, user, body: CronSearch) -> list[dict]:
    """The user's crons that match every filter given (metadata: contained in theirs), sorted and paged."""
    found = []
    for schedule in _crons(user=user).order_by("created_at"):
        cron = cron_as_dict(schedule)
        if body.assistant_id is not None and cron["assistant_id"] != body.assistant_id:
            continue
        if body.thread_id is not None and cron["thread_id"] != str(body.thread_id):
            continue
        if body.enabled is not None and cron["enabled"] != body.enabled:
            continue
        if body.metadata and not json_contains(cron["metadata"], body.metadata):
            continue
        found.append(cron)
    if body.sort_by:
        present = [cron for cron in found if cron[body.sort_by] is not None]
        found = sorted(present, key=lambda cron: cron[body.sort_by], reverse=body.sort_order == "desc") + [
            cron for cron in found if cron[body.sort_by] is None]
    found = found[body.offset:body.offset + body.limit]
    if body.select:
        found = [{key: cron[key] for key in body.select if key in cron} for cron in found]
    return found
