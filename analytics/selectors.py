"""Reads of analytics: prices, usage reports from the rollups, and what the aggregates should be."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Cast, Coalesce, NullIf, TruncDate
from django.utils import timezone

from analytics.models import ModelPrice, TemplateAnalytics, UsageRollup
from core.cache import hot_reads
from conversations.models import Message
from workflows.ledger import MCP_ANSWERED
from workflows.models import LLMCall, ProviderAttempt, ToolCall, WorkflowExecution, WorkflowTemplate


def prices_in_force(*, provider: str, at: datetime | None) -> list[ModelPrice]:
    """The active prices of `provider` and the wildcard in force at `at` (None: every one, those dated later
    too), the latest first: every run and every call asks."""
    prices = ModelPrice.objects.filter(is_active=True, provider__in=(provider, ModelPrice.WILDCARD))
    if at is not None:
        prices = prices.filter(effective_from__lte=at)
    return list(prices.order_by("-effective_from"))


def price_for_call(*, provider: str, model: str, at: datetime | None = None) -> ModelPrice | None:
    """The price in force for a call: the latest effective_from not after `at`; an exact-provider row beats
    a wildcard one from the same moment."""
    at = at or timezone.now()
    candidates = hot_reads.get(("prices", provider), lambda: prices_in_force(provider=provider, at=None),
                               thaw=False)  # (frozen rows: only the one chosen is made an instance)
    best = None
    for price in candidates:
        if price.effective_from > at:  # (every active row is read: one dated later comes into force by itself)
            continue
        if not ModelPrice.row_matches(price, provider, model):
            continue
        if best is None:
            best = price
        elif price.effective_from < best.effective_from:
            break
        elif price.provider == provider and best.provider == ModelPrice.WILDCARD:
            best = price
    return None if best is None else best.thaw()


_STATUS = WorkflowExecution.Status


def template_analytics_from_executions() -> dict:
    """Per template: stored TemplateAnalytics figures next to the same figures from its terminal executions."""
    zero = Value(0)
    terminal = Q(executions__status__in=WorkflowExecution.TERMINAL)
    templates = WorkflowTemplate.objects.annotate(
        real_total=Count("executions", filter=terminal),
        real_ok=Count("executions", filter=Q(executions__status=_STATUS.COMPLETED)),
        real_failed=Count("executions", filter=Q(executions__status=_STATUS.FAILED)),
        real_cancelled=Count("executions", filter=Q(executions__status=_STATUS.CANCELLED)),
        real_time=Coalesce(Sum("executions__execution_time_ms", filter=terminal), zero),
        real_prompt=Coalesce(Sum("executions__prompt_tokens", filter=terminal), zero),
        real_completion=Coalesce(Sum("executions__completion_tokens", filter=terminal), zero),
        real_tokens=Coalesce(Sum("executions__total_tokens", filter=terminal), zero),
        real_cost=Coalesce(
            Sum("executions__cost", filter=terminal),
            Value(0, output_field=WorkflowExecution._meta.get_field("cost")),
        ),
        real_last_used=Max("executions__completed_at", filter=terminal),
    )
    stored = template_figures_stored()
    result = {}
    for template in templates:
        row = stored.get(template.pk)
        result[template.pk] = {
            "key": template.key,
            "stored": None if row is None else {name: row[name] for name in TEMPLATE_COUNTERS},
            "actual": {
                "total_executions": template.real_total,
                "successful_executions": template.real_ok,
                "failed_executions": template.real_failed,
                "cancelled_executions": template.real_cancelled,
                "total_execution_time_ms": template.real_time,
                "prompt_tokens": template.real_prompt,
                "completion_tokens": template.real_completion,
                "total_tokens": template.real_tokens,
                "total_cost": template.real_cost,
            },
            "last_used_at": template.real_last_used,
        }
    return result


def price_list() -> QuerySet[ModelPrice]:
    """Every price row, history included (a change is a new row with its own effective_from)."""
    return ModelPrice.objects.all()


_REGEX_SPECIAL = set(".^$*+?{}[]|()")


def _literal_name(pattern: str) -> str:
    """The longest plain name a price pattern starts with (`gpt-4\\.1(-\\d{4}…)?` → `gpt-4.1`)."""
    name, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and not pattern[index + 1].isalnum():
            name.append(pattern[index + 1])
            index += 2
            continue
        if char in _REGEX_SPECIAL or char == "\\":
            break
        name.append(char)
        index += 1
    return "".join(name)


def priced_models(*, providers) -> list[dict]:
    """The models of `providers` a price in force covers, by name: {"provider", "model", "since"}, one per active
    price pattern, named by the provider's default model when the pattern prices it, else by the pattern's plain
    start when the pattern prices that (`gpt-4[.]1(-…)?` → `gpt-4.1`). A pattern that names nothing is left out."""
    now, seen, models = timezone.now(), set(), []
    for price in price_list().filter(is_active=True, effective_from__lte=now, provider__in=list(providers)).order_by(
            "provider", "model_pattern"):
        default = settings.CHATTER_PROVIDER_DEFAULT_MODELS.get(price.provider, "")
        name = default if price.matches(price.provider, default) else _literal_name(price.model_pattern)
        if not name or name.endswith("-") or (price.provider, name) in seen or not price.matches(price.provider, name):
            continue
        seen.add((price.provider, name))
        models.append({"provider": price.provider, "model": name, "since": price.effective_from})
    return models


def priced_model_names(*, provider: str) -> list[str]:
    """The names of `provider`'s priced models (priced_models), for errors that say what can be asked for."""
    return [model["model"] for model in priced_models(providers=[provider])]


def template_analytics_list(*, user) -> QuerySet[WorkflowTemplate]:
    """Templates with their analytics (see templates_with_analytics). TemplateAnalytics count every user's runs of
    a template, so they are shown to the template's owner and to staff; built-ins (no owner) to staff only. A
    user's own usage of any template is usage_report(group_by="template")."""
    templates = WorkflowTemplate.objects.all()
    if not user.is_staff:
        templates = templates.filter(owner=user)
    return templates_with_analytics(templates)


# What a TemplateAnalytics row counts, and the moments it keeps.
TEMPLATE_COUNTERS = ("total_executions", "successful_executions", "failed_executions", "cancelled_executions",
                     "total_execution_time_ms", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost")
TEMPLATE_MOMENTS = ("last_used_at", "last_success_at", "last_failure_at")


def templates_with_analytics(templates: QuerySet[WorkflowTemplate]) -> QuerySet[WorkflowTemplate]:
    """The templates annotated with their TemplateAnalytics figures (TEMPLATE_COUNTERS, TEMPLATE_MOMENTS) and
    `average_execution_time_ms`, in the same query. A template that never ran has no row yet (it is made when its
    first run ends): its figures are zeros, its moments and average None."""
    money = TemplateAnalytics._meta.get_field("total_cost")
    figures = {name: Coalesce(_over_slots(Sum, name), Value(0)) for name in TEMPLATE_COUNTERS}
    figures["total_cost"] = Coalesce(_over_slots(Sum, "total_cost"), Value(Decimal("0")), output_field=money)
    return templates.annotate(
        **figures, **{name: _over_slots(Max, name) for name in TEMPLATE_MOMENTS},
    ).annotate(average_execution_time_ms=ExpressionWrapper(
        Cast("total_execution_time_ms", FloatField()) / NullIf("total_executions", Value(0)),
        output_field=FloatField()))


def _over_slots(function, name: str) -> Subquery:
    """A template's figure: `function` (Sum, Max) of `name` over its slots (TemplateAnalytics), a subquery per
    template, so that what else a query joins never counts a slot twice."""
    slots = TemplateAnalytics.objects.filter(template=OuterRef("pk")).order_by().values("template")
    return Subquery(slots.annotate(figure=function(name)).values("figure"))


def template_figures_stored() -> dict:
    """Per template that has any: its figures (TEMPLATE_COUNTERS: sums over its slots; TEMPLATE_MOMENTS: the
    latest)."""
    rows = TemplateAnalytics.objects.order_by().values("template_id").annotate(
        **{f"n_{name}": Sum(name) for name in TEMPLATE_COUNTERS},
        **{f"n_{name}": Max(name) for name in TEMPLATE_MOMENTS})
    return {row["template_id"]: {name: row[f"n_{name}"] for name in (*TEMPLATE_COUNTERS, *TEMPLATE_MOMENTS)}
            for row in rows}


# --- usage rollups ---------------------------------------------------------------------------------------
USAGE_GROUPS = {
    # group_by: (the columns a row is grouped by, and what they are called in a report row), ordering
    "day": ({"day": "day"}, ("day",)),
    "provider": ({"provider": "provider"}, ("-n_cost", "provider")),
    "model": ({"provider": "provider", "model": "model"}, ("-n_cost", "provider", "model")),
    "template": ({"template_id": "template_id", "template__key": "template_key"}, ("-n_cost", "template__key")),
    "conversation": ({"conversation_id": "conversation_id", "conversation__title": "conversation_title"},
                     ("-n_cost", "conversation_id")),
    "key": ({"api_key__uid": "key_id", "api_key__name": "key_name", "api_key__prefix": "key_prefix"},
            ("-n_cost", "api_key__uid")),
}


def usage_dimensions(*, day: date, owner_id, provider: str, model: str, template_id, conversation_id,
                     api_key_id=None, slot: int = 0) -> dict:
    """One rollup row's identity: its dimension columns and the key derived from them and its slot."""
    dims = {"day": day, "owner_id": owner_id, "provider": provider or "", "model": model or "",
            "template_id": template_id, "conversation_id": conversation_id, "api_key_id": api_key_id}
    return {"key": UsageRollup.key_for(*dims.values(), slot=slot), **dims}


def usage_day(moment: datetime) -> date:
    return moment.astimezone(dt_timezone.utc).date()


def usage_rollups(*, owner_ids: list | None = None, start: date | None = None, end: date | None = None) -> QuerySet:
    """Rollup rows of some owners (None: everyone) with day in [start, end] (either may be open)."""
    rows = UsageRollup.objects.all()
    if owner_ids is not None:
        rows = rows.filter(owner_id__in=owner_ids)
    if start is not None:
        rows = rows.filter(day__gte=start)
    if end is not None:
        rows = rows.filter(day__lte=end)
    return rows


def _usage_sums() -> dict:
    return {f"n_{name}": Sum(name) for name in UsageRollup.COUNTERS}


def usage_report(*, group_by: str, owner_ids: list | None = None, start: date | None = None,
                 end: date | None = None) -> QuerySet:
    """Rows of usage grouped by day, provider, model, template or conversation, answered from the rollups: the
    group's columns (see USAGE_GROUPS) and `n_<counter>` sums. Groups without usage are absent."""
    columns, ordering = USAGE_GROUPS[group_by]
    return (usage_rollups(owner_ids=owner_ids, start=start, end=end)
            .values(*columns).annotate(**_usage_sums()).order_by(*ordering))


@dataclass(frozen=True)
class UsagePage:
    rows: list[dict]  # as usage_report's
    count: int  # groups in range
    totals: dict  # over every row in range


def usage_report_page(*, group_by: str, owner_ids: list | None = None, start: date | None = None,
                      end: date | None = None, offset: int = 0, limit: int = 100) -> UsagePage:
    """A page of usage_report with the number of groups and the totals. One scan of the rollups when the page
    holds every group (the totals are then its rows' sums, exact Decimals), a second one for the totals when not."""
    scope = {"owner_ids": owner_ids, "start": start, "end": end}
    if group_by == "conversation":
        rows, count = _conversation_page(scope, offset=offset, limit=limit)
    else:
        rows = list(usage_report(group_by=group_by, **scope).annotate(
            n_groups=Window(Count("*")))[offset:offset + limit])
        count = rows[0]["n_groups"] if rows else None
    if count is None:
        count = 0 if offset == 0 else usage_report(group_by=group_by, **scope).count()
    if offset == 0 and len(rows) == count:
        totals = usage_zero()
        for row in rows:
            for name in UsageRollup.COUNTERS:
                totals[name] += row[f"n_{name}"]
    else:
        totals = usage_totals(**scope)
    return UsagePage(rows=rows, count=count, totals=totals)


def _conversation_page(scope: dict, *, offset: int, limit: int) -> tuple[list[dict], int | None]:
    """There can be as many conversations as rows: rank them by cost alone (an index-only scan of
    usage_rollup_conversation_cost, in conversation order), then sum every figure of the page's conversations only."""
    ranked = list(usage_rollups(**scope).values("conversation_id").annotate(
        n_cost=Sum("cost"), n_groups=Window(Count("*"))).order_by("-n_cost", "conversation_id")[offset:offset + limit])
    if not ranked:
        return [], None
    ids = [row["conversation_id"] for row in ranked]
    wanted = Q(conversation_id__in=[pk for pk in ids if pk is not None])
    if None in ids:
        wanted |= Q(conversation_id__isnull=True)
    found = {row["conversation_id"]: row for row in usage_report(group_by="conversation", **scope).filter(wanted)}
    return [found[pk] for pk in ids if pk in found], ranked[0]["n_groups"]  # (one deleted in between is gone)


def usage_cost_by_group(*, owner_ids: list | None = None, start: date | None = None,
                        end: date | None = None) -> list[tuple[str, Decimal]]:
    """Cost per Django group (a team), as the sum of its members' rollups, most first. A user in two groups
    counts in both."""
    by_owner = dict(usage_rollups(owner_ids=owner_ids, start=start, end=end).values("owner_id").annotate(
        n_cost=Sum("cost")).values_list("owner_id", "n_cost").order_by())
    groups: dict[str, Decimal] = {}
    memberships = get_user_model().groups.through.objects.filter(user_id__in=list(by_owner)).values_list(
        "group__name", "user_id")
    for name, user_id in memberships:
        groups[name] = groups.get(name, Decimal("0")) + (by_owner[user_id] or Decimal("0"))
    return sorted(groups.items(), key=lambda item: (-item[1], item[0]))


def usage_totals(*, owner_ids: list | None = None, start: date | None = None, end: date | None = None) -> dict:
    """The sums over every row in range, with zeros (not None) when there is none."""
    found = usage_rollups(owner_ids=owner_ids, start=start, end=end).aggregate(**_usage_sums())
    return {name: found[f"n_{name}"] or (Decimal("0") if name == "cost" else 0) for name in UsageRollup.COUNTERS}


def usage_by_day(*, owner_ids: list | None = None, start: date, end: date) -> list[dict]:
    """Every day of [start, end], zeros included (for charts)."""
    found = {row["day"]: row for row in usage_report(group_by="day", owner_ids=owner_ids, start=start, end=end)}
    days = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        row = found.get(day, {})
        days.append({"day": day, **{name: row.get(f"n_{name}") or 0 for name in UsageRollup.COUNTERS}})
    return days


def created_within(start: date, end: date, *, field: str = "created_at") -> Q:
    """Rows whose `field` falls on a UTC day of [start, end]: from start's midnight to the next after end's, or
    with no upper bound when end is the last day a date can be (9999-12-31 has no next midnight)."""
    utc = dt_timezone.utc
    since = Q(**{f"{field}__gte": datetime.combine(start, datetime.min.time(), tzinfo=utc)})
    if end == date.max:
        return since
    return since & Q(**{f"{field}__lt": datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=utc)})


def usage_by_deployment(*, owner_ids: list | None = None, start: date, end: date) -> list[dict]:
    """Spend and errors per deployment of the deployments file (CHATTER_DEPLOYMENTS) over [start, end] (UTC days):
    the calls each served with their tokens and cost (LLMCall.deployment), and its attempts, failed ones among them
    (ProviderAttempt). Most spent first."""
    days = created_within(start, end)
    owned = {} if owner_ids is None else {"execution__owner_id__in": owner_ids}
    rows: dict[str, dict] = {}

    def row(deployment: str) -> dict:
        return rows.setdefault(deployment, {"deployment": deployment, "llm_calls": 0, "total_tokens": 0,
                                            "cost": Decimal(0), "attempts": 0, "errors": 0})

    for found in LLMCall.objects.filter(days, **owned).exclude(
            deployment="").order_by().values("deployment").annotate(
            n_calls=Count("id"), n_tokens=Sum("total_tokens"), n_cost=Sum("cost")):
        row(found["deployment"]).update(llm_calls=found["n_calls"], total_tokens=found["n_tokens"] or 0,
                                        cost=found["n_cost"] or Decimal(0))
    for found in ProviderAttempt.objects.filter(days, **owned).order_by(
            ).values("deployment").annotate(n_attempts=Count("id"), n_errors=Count("id", filter=Q(ok=False))):
        row(found["deployment"]).update(attempts=found["n_attempts"], errors=found["n_errors"])
    return sorted(rows.values(), key=lambda r: (-r["cost"], -r["llm_calls"], -r["errors"], r["deployment"]))


def usage_from_source() -> dict:
    """What every rollup row should hold, computed from the source rows (terminal runs, their LLM calls, the
    messages that exist, those of a run once it is terminal), keyed like UsageRollup.key. See UsageRollup for what
    each counter counts."""
    utc = dt_timezone.utc
    rows: dict = {}

    def add(found, counters):
        for row in found:
            dims = usage_dimensions(day=row["d_day"], owner_id=row["d_owner"], provider=row["d_provider"],
                                    model=row["d_model"], template_id=row["d_template"],
                                    conversation_id=row["d_conversation"], api_key_id=row["d_key"])
            target = rows.setdefault(dims["key"], {**dims, **usage_zero()})
            for name in counters:
                target[name] += row[name] or 0

    status = WorkflowExecution.Status
    terminal = WorkflowExecution.objects.filter(status__in=WorkflowExecution.TERMINAL)
    ended = TruncDate(Coalesce("completed_at", "created_at"), tzinfo=utc)
    add(terminal.values(d_day=ended, d_owner=F("owner_id"), d_provider=F("provider"), d_model=F("model"),
                        d_template=F("template_id"), d_conversation=F("conversation_id"),
                        d_key=F("api_key_id")).annotate(
        executions=Count("id"), completed_executions=Count("id", filter=Q(status=status.COMPLETED)),
        failed_executions=Count("id", filter=Q(status=status.FAILED)),
        cancelled_executions=Count("id", filter=Q(status=status.CANCELLED))).order_by(),
        ("executions", "completed_executions", "failed_executions", "cancelled_executions"))

    run_ended = TruncDate(Coalesce("execution__completed_at", "execution__created_at"), tzinfo=utc)
    tokens = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_prompt_tokens", "reasoning_tokens")
    add(LLMCall.objects.filter(execution__status__in=WorkflowExecution.TERMINAL).values(
        d_day=run_ended, d_owner=F("execution__owner_id"), d_provider=F("provider"), d_model=F("model"),
        d_template=F("execution__template_id"), d_conversation=F("execution__conversation_id"),
        d_key=F("execution__api_key_id")).annotate(
        llm_calls=Count("id"), cost=Sum("cost"), **{name: Sum(name) for name in tokens}).order_by(),
        ("llm_calls", *tokens, "cost"))

    # A run's MCP tool calls that answered: their cost, on provider "mcp" and the tool's name as the model.
    add(ToolCall.objects.filter(MCP_ANSWERED, execution__status__in=WorkflowExecution.TERMINAL).values(
        d_day=run_ended, d_owner=F("execution__owner_id"), d_provider=Value(ModelPrice.TOOLS), d_model=F("tool"),
        d_template=F("execution__template_id"), d_conversation=F("execution__conversation_id"),
        d_key=F("execution__api_key_id")).annotate(cost=Sum("cost")).order_by(), ("cost",))

    # A run's messages count once it has ended (it books them then); messages of no run count as they are saved.
    counted = Message.objects.filter(Q(execution__isnull=True) | Q(execution__status__in=WorkflowExecution.TERMINAL))
    add(counted.values(
        d_day=TruncDate("created_at", tzinfo=utc), d_owner=F("conversation__owner_id"), d_provider=F("provider_used"),
        d_model=F("model_used"), d_template=F("execution__template_id"), d_conversation=F("conversation_id"),
        d_key=F("execution__api_key_id"),
    ).annotate(messages=Count("id")).order_by(), ("messages",))
    return rows


def usage_zero() -> dict:
    return {name: Decimal("0") if name == "cost" else 0 for name in UsageRollup.COUNTERS}


def usage_stored() -> dict:
    """The rollup rows as stored, summed over the slots of their dimensions, keyed by the key of slot 0."""
    stored: dict = {}
    for row in UsageRollup.objects.values(*UsageRollup.DIMENSIONS, *UsageRollup.COUNTERS).order_by():
        dims = usage_dimensions(**{name: row[name] for name in UsageRollup.DIMENSIONS})
        target = stored.setdefault(dims["key"], {**dims, **usage_zero()})
        for name in UsageRollup.COUNTERS:
            target[name] += row[name]
    return stored
