"""Writes of schedules (cron runs of a template or definition) and the django-q2 schedules of the system."""
from __future__ import annotations

import logging
import math
from datetime import datetime
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import audit_record
from conversations.selectors import conversation_list
from core.errors import ChatterError, InvalidInput, NotFound, TooManyRuns
from core.schedules import schedule_keep
from core.time_zones import time_zone_known
from engine.config import config_resolve
from engine.graph import parse_graph
from webhooks.services import webhook_url_check
from workflows.models import WorkflowDefinition, WorkflowExecution, WorkflowSchedule, WorkflowTemplate
from workflows.selectors import conversation_has_run_in_progress
from workflows.services.definitions import visible_definition
from workflows.services.recovery import (
    PRUNE_SCHEDULE_NAME,
    SWEEP_SCHEDULE_NAME,
)
from workflows.services.run_requests import ScheduledRequest
from workflows.services.runs import execution_create, models_check
from workflows.services.templates import graph_prompts_check, is_uuid, visible_template

logger = logging.getLogger(__name__)


# --- schedules ------------------------------------------------------------------------------------------
SCHEDULER_NAME = "chatter-schedules"


CRON_FIELDS = (("minute", "0-59"), ("hour", "0-23"), ("day of the month", "1-31"), ("month", "1-12 or jan-dec"),
               ("weekday", "0-7 or sun-sat"))


def _cron_problem(cron) -> str | None:
    """What is wrong with a cron expression's form, naming the field at fault (croniter says only "out of range")."""
    if not isinstance(cron, str) or len(cron.split()) != 5:
        return f"{cron!r} is not a cron expression of 5 fields (minute hour day month weekday)"
    if croniter.is_valid(cron):
        return None
    fields = cron.split()
    for index, (name, allowed) in enumerate(CRON_FIELDS):
        if not croniter.is_valid(" ".join(field if i == index else "*" for i, field in enumerate(fields))):
            return f"{cron!r}: its {name} field {fields[index]!r} is not valid ({allowed}, with * , - and /)"
    return f"{cron!r} is not a valid cron expression (minute hour day month weekday)"


def _timing_errors(*, cron, timezone_name) -> list[dict]:
    """What keeps a cron in a time zone from ever firing: its form, days that do not exist, an unknown zone."""
    errors = []
    if problem := _cron_problem(cron):
        errors.append({"path": "cron", "code": "invalid_cron", "message": problem})
    elif schedule_next_run(cron=cron, timezone_name="UTC", after=timezone.now()) is None:
        errors.append({"path": "cron", "code": "invalid_cron",
                       "message": f"{cron!r} names only days that do not exist (such as 30 February): it never fires"})
    if not time_zone_known(timezone_name):
        errors.append({"path": "timezone", "code": "invalid_timezone",
                       "message": f"{timezone_name!r} is not an IANA time zone (e.g. Europe/Paris)"})
    return errors


def _schedule_errors(*, cron, timezone_name, run_input) -> list[dict]:
    errors = _timing_errors(cron=cron, timezone_name=timezone_name)
    if not isinstance(run_input, dict) or not isinstance(run_input.get("variables", {}), dict):
        errors.append({"path": "input", "code": "invalid_type",
                       "message": 'input must be an object like {"message": "...", "variables": {...}}'})
    return errors


def schedule_next_run(*, cron: str, timezone_name: str, after: datetime) -> datetime | None:
    """The next time the cron fires after `after`, read in the schedule's own time zone; None for a cron that names
    only days that do not exist (`0 9 30 2 *`), which croniter accepts as valid.

    DST as cron (Vixie cron, cronie) keeps it: a time the clocks skip fires at the first minute after the gap
    (`30 2 * * *` at 03:00, croniter's reading), and in the hour they repeat a cron of fixed hours fires in its first
    pass only, where croniter names each of its times twice (`30 2 * * *` would fire at 02:30 and again an hour
    later); a cron whose hour is a wildcard (`30 * * * *`, `0 */2 * * *`) fires as the hours pass, in both."""
    zone = ZoneInfo(timezone_name)
    times = croniter(cron, after.astimezone(zone))
    fixed_hours = not cron.split()[1].startswith("*")
    try:
        while True:
            following = times.get_next(datetime).astimezone(dt_timezone.utc)
            if not (fixed_hours and _repeated_wall_time(following.astimezone(zone))):
                return following
    except CroniterBadDateError:
        return None


def _repeated_wall_time(local: datetime) -> bool:
    """Whether a local time is the second pass of a wall time the clocks went back over (zoneinfo's fold=1)."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def schedule_validate(*, owner, schedule: WorkflowSchedule) -> None:
    """Check a schedule, saved or not, as its writes do: InvalidInput naming each field at fault (the admin's form
    asks before it saves)."""
    errors = _schedule_errors(cron=schedule.cron, timezone_name=schedule.timezone, run_input=schedule.input)
    if not schedule.name or not schedule.name.strip():
        errors.append({"path": "name", "code": "required", "message": "name is required"})
    if schedule.chat and not (schedule.input.get("message") or "").strip():
        errors.append({"path": "input.message", "code": "required",
                       "message": "a schedule of chat turns needs the turn's message"})
    if schedule.conversation_id and not schedule.chat and schedule.graph is None:  # a graph's own input: no turn
        errors.append({"path": "chat", "code": "invalid", "message": "a schedule in a conversation runs chat turns"})
    if errors:
        raise InvalidInput("invalid schedule", details=errors)
    if schedule.webhook:
        webhook_url_check(url=schedule.webhook, path="webhook")
    if schedule.template_id:
        params, graph = schedule.template.params, schedule.template.graph
    elif schedule.definition_id:
        params = (schedule.definition.metadata or {}).get("config")
        graph = {"nodes": schedule.definition.nodes, "edges": schedule.definition.edges}
    else:
        params, graph = {}, schedule.graph
    config = config_resolve(params, schedule.config)
    parsed = parse_graph(graph)
    graph_prompts_check(parsed, owner=owner, kept=True)
    models_check(parsed, config)


def _owned_conversation(*, owner, conversation_id):
    conversation = conversation_list(user=owner).filter(pk=conversation_id).first() if is_uuid(conversation_id) \
        else None
    if conversation is None:
        raise NotFound("conversation not found")
    return conversation


def schedule_create(*, owner, name: str, cron: str, timezone_name: str = "UTC", template: str | None = None,
                    definition_id=None, graph: dict | None = None, run_input: dict | None = None,
                    config: dict | None = None, enabled: bool = True, chat: bool = False, conversation_id=None,
                    webhook: str = "", ends_at: datetime | None = None) -> WorkflowSchedule:
    """A workflow run on a cron. Bad cron, time zone, source or config raise InvalidInput before any row. `chat`:
    each run is a chat turn, in the owner's conversation `conversation_id` or in a new one each time; `webhook`:
    each run's end is POSTed there; `ends_at`: no run starts from then on."""
    if len([given for given in (template, definition_id, graph) if given is not None]) != 1:
        raise InvalidInput("give exactly one of template, definition_id, graph")
    schedule = WorkflowSchedule(
        graph=graph,
        owner=owner, name=(name or "")[:255], cron=cron, timezone=timezone_name, enabled=enabled,
        input=run_input if run_input is not None else {}, config=config or {},
        template=visible_template(owner=owner, key_or_id=template) if template is not None else None,
        definition=visible_definition(owner=owner, definition_id=definition_id) if definition_id else None,
        chat=chat, webhook=webhook or "", ends_at=ends_at,
        conversation=_owned_conversation(owner=owner, conversation_id=conversation_id) if conversation_id else None,
    )
    schedule_validate(owner=owner, schedule=schedule)
    schedule.next_run_at = schedule_next_run(cron=cron, timezone_name=timezone_name, after=timezone.now()) \
        if enabled else None
    with transaction.atomic():
        schedule.save()
        audit_record(action="schedule.created", actor=owner, target=schedule,
                     data=_schedule_summary(schedule, template_key=_template_key(schedule)))
    return schedule


SCHEDULE_EDITABLE = ("name", "cron", "timezone", "input", "config", "enabled", "chat", "webhook", "ends_at")


def schedule_update(*, schedule: WorkflowSchedule, actor=None, ip: str | None = None, **changes) -> WorkflowSchedule:
    """Change the editable fields (named as on the model); what the schedule runs is fixed at creation. Audited as
    `actor`'s (staff in the admin; by default the owner's)."""
    fixed = sorted(set(changes) - set(SCHEDULE_EDITABLE))
    if fixed:
        raise InvalidInput("these schedule fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} is fixed once the schedule exists"}
            for name in fixed])
    with transaction.atomic():
        locked = WorkflowSchedule.objects.select_for_update().get(pk=schedule.pk)
        for field, value in changes.items():
            setattr(locked, field, value)
        schedule_validate(owner=locked.owner, schedule=locked)
        locked.next_run_at = schedule_next_run(cron=locked.cron, timezone_name=locked.timezone,
                                               after=timezone.now()) if locked.enabled else None
        locked.save()
        audit_record(action="schedule.updated", actor=actor or locked.owner, target=locked, ip=ip,
                     data={**_schedule_summary(locked, template_key=_template_key(locked)), "fields": sorted(changes)})
    return locked


def schedule_delete(*, schedule: WorkflowSchedule, actor=None) -> None:
    """Remove a schedule; its past executions stay (their `schedule` becomes null). Audited by
    schedule_deleted_audit, in the same transaction; `actor`: who deletes it, when not its owner (staff, in the
    admin)."""
    schedule.deleted_by = actor
    with transaction.atomic():
        schedule.delete()


def schedule_deleted_audit(sender, instance: WorkflowSchedule, origin=None, **kwargs) -> None:
    """Every schedule that goes is audited (`schedule.deleted`), however it goes: deleted itself, with the
    conversation (thread) it fires into, with its owner, or with the template or definition it runs. Connected to
    post_delete (workflows.apps): inside the deleting transaction, so the row and its audit go together.

    A schedule that goes with its template or definition (`origin`, the object whose deletion took it; perhaps
    another user's public one) is that deletion's: the row's actor is the source's owner, who alone may delete it,
    and `deleted_with` names the source. A cascade may have deleted the template or the owner first, so neither is
    read through the schedule."""
    actor = get_user_model().objects.filter(pk=instance.owner_id).first()
    template_key = None
    if instance.template_id:
        template_key = WorkflowTemplate.objects.filter(pk=instance.template_id).values_list("key", flat=True).first()
    data = {}
    if isinstance(origin, WorkflowSchedule) and getattr(origin, "deleted_by", None) is not None:
        actor = origin.deleted_by  # (schedule_delete's actor)
    if isinstance(origin, (WorkflowTemplate, WorkflowDefinition)):
        actor = origin.owner
        if isinstance(origin, WorkflowTemplate):
            template_key = origin.key
        data["deleted_with"] = {"type": origin._meta.model_name, "id": str(origin.pk)}
    audit_record(action="schedule.deleted", actor=actor, target=instance,
                 data={**_schedule_summary(instance, template_key=template_key), **data})


def _schedule_summary(schedule: WorkflowSchedule, *, template_key: str | None) -> dict:
    return {"name": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone, "enabled": schedule.enabled,
            "template": template_key,
            "definition_id": schedule.definition_id, "chat": schedule.chat,
            "conversation_id": str(schedule.conversation_id) if schedule.conversation_id else None,
            "webhook": bool(schedule.webhook), "ends_at": schedule.ends_at.isoformat() if schedule.ends_at else None}


def _template_key(schedule: WorkflowSchedule) -> str | None:
    return schedule.template.key if schedule.template_id else None


def scheduler_ensure() -> None:
    """The django-q2 schedules of runs, each kept by name (idempotent: no duplicates on restart or re-migrate):
    due WorkflowSchedules every minute, the recovery sweep every CHATTER_SWEEP_INTERVAL_S (whole minutes:
    django-q2's granularity), event pruning daily. (Analytics keeps its own: analytics.services.)"""
    from django_q.models import Schedule

    every_minutes = {"schedule_type": Schedule.MINUTES, "repeats": -1}
    schedules = {
        SCHEDULER_NAME: {"func": "workflows.tasks.schedules_run_due_task", **every_minutes, "minutes": 1},
        SWEEP_SCHEDULE_NAME: {"func": "workflows.tasks.execution_sweep_task", **every_minutes,
                              "minutes": max(1, math.ceil(settings.CHATTER_SWEEP_INTERVAL_S / 60))},
        PRUNE_SCHEDULE_NAME: {"func": "workflows.tasks.events_prune_task", "schedule_type": Schedule.DAILY,
                              "repeats": -1},
    }
    for name, defaults in schedules.items():
        schedule_keep(name, **defaults)


def schedules_run_due(*, now: datetime | None = None) -> list[WorkflowExecution]:
    """Start a `scheduled` execution for every enabled schedule that is due, owned by the schedule's owner, the
    longest waiting first: when an owner has more due than runs they may have at once, those refused this tick go
    first on the next (_schedule_refused keeps them due), not the same ones by name every time. Each schedule is
    claimed by moving its next_run_at, so two workers never start the same tick."""
    now = now or timezone.now()
    started = []
    due = WorkflowSchedule.objects.filter(enabled=True, next_run_at__lte=now).filter(
        Q(ends_at__isnull=True) | Q(ends_at__gt=now)).order_by("next_run_at", "id")
    for schedule in due.select_related("owner", "template", "definition"):
        # A row its writes' checks did not see (from before they were made, or written around them) may hold a cron
        # or time zone that can never fire: it is stopped, saying why, and the others run.
        problems = _timing_errors(cron=schedule.cron, timezone_name=schedule.timezone)
        if problems:
            _schedule_stopped(schedule=schedule, problems=problems, at=now)
            continue
        following = schedule_next_run(cron=schedule.cron, timezone_name=schedule.timezone, after=now)
        claimed = WorkflowSchedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(
            next_run_at=following, last_run_at=now)
        if not claimed:
            continue
        if schedule.conversation_id and conversation_has_run_in_progress(conversation_id=schedule.conversation_id):
            # A conversation runs one turn at a time: this tick is skipped (LangGraph's multitask "reject").
            logger.info("schedule %s skipped a run: its conversation is busy", schedule.pk)
            continue
        try:
            execution = execution_create(ScheduledRequest(schedule=schedule))
        except ChatterError as refusal:
            _schedule_refused(schedule=schedule, refusal=refusal, at=now, claimed_next=following)
            continue
        WorkflowSchedule.objects.filter(pk=schedule.pk).update(last_execution=execution, last_error="",
                                                               last_error_at=None)
        started.append(execution)
    return started


def _schedule_stopped(*, schedule: WorkflowSchedule, problems: list[dict], at: datetime) -> None:
    """A due schedule whose cron or time zone can never fire: no next run, and last_error says why (its codes and
    messages, as the API's 400 names them); a write that passes the checks sets its next run again."""
    reason = "; ".join(f"{problem['code']}: {problem['message']}" for problem in problems)
    WorkflowSchedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(
        next_run_at=None, last_error=reason, last_error_at=at)
    logger.warning("schedule %s can never fire, stopped: %s", schedule.pk, reason)


def _schedule_refused(*, schedule: WorkflowSchedule, refusal: ChatterError, at: datetime,
                      claimed_next: datetime | None) -> None:
    """A tick whose run was refused: the schedule says why and when (last_error, last_error_at). A template or
    definition its owner no longer sees (another user's, made private since: NotFound) is gone for good, so the
    schedule is disabled, audited as the schedule's doing. Too many runs at once passes as the owner's runs end, so
    the schedule stays due (its next_run_at, moved to `claimed_next` by the claim, goes back unless a write changed
    it since): the next tick tries it again, before those due after it. Any other refusal (a hard budget with no
    room, a model no longer offered) leaves it enabled for its next time. An expected outcome: a warning, no
    traceback."""
    reason = f"{refusal.code}: {refusal.message}"
    gone, busy = isinstance(refusal, NotFound), isinstance(refusal, TooManyRuns)
    with transaction.atomic():
        changes = {"last_error": reason, "last_error_at": at}
        if gone:
            changes.update(enabled=False, next_run_at=None)
        WorkflowSchedule.objects.filter(pk=schedule.pk).update(**changes)
        if busy:
            WorkflowSchedule.objects.filter(pk=schedule.pk, next_run_at=claimed_next).update(
                next_run_at=schedule.next_run_at)
        if gone:
            audit_record(action="schedule.disabled", actor=schedule.owner, actor_type="schedule", target=schedule,
                         data={"name": schedule.name, "reason": reason})
    logger.warning("schedule %s could not start its run%s: %s", schedule.pk,
                   ", disabled" if gone else ", tried again on the next tick" if busy else "", reason)


