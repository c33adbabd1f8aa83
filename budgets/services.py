"""Budgets held by reservation: what a run may spend is reserved before it spends it, under a conditional UPDATE of
the budget's period row, so concurrent runs see each other's reservations. A run reserves its first call's worst
case before it is written (`budget_reserve`; refused: 429 `budget_exceeded`, no run row), tops the reservation up
before each model call (`budget_top_up`) and settles it to what it spent in its terminal transaction
(`budget_settle`). Soft budgets reserve nothing. The design and its bound: docs/operations/budgets.md.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import ROUND_UP, Decimal
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db.models import CharField, F, Q, Value
from django.db.models.functions import Cast, Greatest
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from audit.services import audit_record
from budgets.models import Budget, BudgetPeriod
from core.cache import hot_reads
from core.errors import ChatterError, Conflict, InvalidInput
from core.money import usd
from core.time_zones import time_zone_known
from webhooks.services import webhook_delivery_create

MILLION = Decimal(1_000_000)
CENTS = Decimal("0.00000001")
PROMPT_MARGIN = 1.25  # the prompt estimate (characters / 4) is inflated by this, plus PROMPT_SLACK tokens
PROMPT_SLACK = 32
EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)  # the one period of a `total` budget
ZERO = Decimal("0")


class BudgetRefused(ChatterError):
    """A hard budget has no room for the run: nothing was written."""

    code = "budget_exceeded"
    status = 429


@dataclass(frozen=True)
class Worst:
    """The most one call can cost: USD and tokens."""

    usd: Decimal
    tokens: int


def worst_case(*, prompt_tokens: int, max_tokens: int, price, choices: int = 1) -> Worst:
    """A call's worst case: its prompt estimate with a margin, and max_tokens of completion for each of its
    `choices` (OpenAI's `n`), at its price."""
    prompt = math.ceil(prompt_tokens * PROMPT_MARGIN) + PROMPT_SLACK
    max_tokens *= max(choices, 1)
    usd = ZERO
    if price is not None:
        usd = ((prompt * price.input_per_million + max_tokens * price.output_per_million) / MILLION).quantize(
            CENTS, rounding=ROUND_UP)
    return Worst(usd=usd, tokens=prompt + max_tokens)


UNKNOWN_ZONE = "not an IANA time zone: its periods are counted in UTC"


def budget_time_zone_error(budget: Budget) -> str | None:
    """What is wrong with the budget's stored time zone (a row saved before the checks, 3756938), None when nothing:
    the API shows it beside the name."""
    return None if time_zone_known(budget.timezone) else UNKNOWN_ZONE


def _zone(budget: Budget) -> ZoneInfo:
    """The zone the budget's periods are counted in: its own, UTC for a stored name no zone has (its readers and the
    runs it governs go on, where ZoneInfo would raise)."""
    return ZoneInfo(budget.timezone) if time_zone_known(budget.timezone) else ZoneInfo("UTC")


def period_start(budget: Budget, at: datetime | None = None) -> datetime:
    """The start (UTC) of the budget's period that `at` (default: now) falls in, periods being counted in the
    budget's time zone (_zone)."""
    if budget.period == Budget.Period.TOTAL:
        return EPOCH
    zone = _zone(budget)
    local = (at or timezone.now()).astimezone(zone)
    day = local.date()
    if budget.period == Budget.Period.WEEK:
        day -= timedelta(days=day.weekday())
    elif budget.period == Budget.Period.MONTH:
        day = day.replace(day=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(dt_timezone.utc)


def budgets_matching(*, owner, api_key=None, template_id=None) -> list[Budget]:
    """The active budgets a run of `owner` (with `api_key`, of `template_id`) falls under. A budget binds a run only
    when staff set it or the run is its owner's: no user's budget reaches another's runs. Reading them locks
    nothing: a reservation's own conditional UPDATE locks its period's row (`budget_reserve`).

    Every run asks, and most find none: whether any budget is active at all is memoised per process
    (core.cache.hot_reads, renewed when a budget is written), so a run while none is active compiles and reads none
    (the queryset: 1.8-3.0 ms of CPU to compile, loaded; the memo: one Redis read, 0.12-0.17 ms; bench/RESULTS.md,
    "Issue 48, items 2 and 3")."""
    if not hot_reads.get(("budgets_active",), budgets_active):
        return []
    groups = get_user_model().groups.through.objects.filter(user_id=owner.pk).values(
        target=Cast("group_id", CharField(max_length=64)))
    scoped = (Q(scope=Budget.Scope.GLOBAL) | Q(scope=Budget.Scope.USER, target_id=str(owner.pk))
              | Q(scope=Budget.Scope.GROUP, target_id__in=groups))
    if api_key is not None:
        scoped |= Q(scope=Budget.Scope.KEY, target_id=str(api_key.uid))
    if template_id is not None:
        scoped |= Q(scope=Budget.Scope.TEMPLATE, target_id=str(template_id))
    return list(Budget.objects.filter(scoped, Q(set_by_staff=True) | Q(owner_id=owner.pk), is_active=True))


def budgets_active() -> bool:
    """Whether any budget is active (one statement)."""
    return Budget.objects.filter(is_active=True).exists()


def _period_rows(hold: dict):
    return BudgetPeriod.objects.filter(budget_id=hold["budget"], starts_at=hold["starts_at"])


def _period_ensure(hold: dict) -> None:
    BudgetPeriod.objects.bulk_create([BudgetPeriod(budget_id=hold["budget"], starts_at=hold["starts_at"])],
                                     ignore_conflicts=True)


def _reserve_more(hold: dict, *, usd: Decimal, tokens: int) -> bool:
    """Add to a hard budget's reservation if spent + reserved stays within its limit: one conditional UPDATE (it
    locks the period's row until the caller's transaction ends, so concurrent reservations take turns)."""
    def attempt() -> int:
        rows = _period_rows(hold)
        if hold["limit_usd"] is not None:
            rows = rows.filter(LessThanOrEqual(F("spent_usd") + F("reserved_usd"),
                                               Value(Decimal(hold["limit_usd"]) - usd)))
        else:
            rows = rows.filter(LessThanOrEqual(F("spent_tokens") + F("reserved_tokens"),
                                               Value(hold["limit_tokens"] - tokens)))
        return rows.update(reserved_usd=F("reserved_usd") + usd, reserved_tokens=F("reserved_tokens") + tokens,
                           updated_at=timezone.now())

    if attempt():
        return True
    # The period's first run makes its row, then tries again. Made whether or not the first try saw a row: a row
    # another run made (and committed) between the try and a check would look like no room. The second try, a
    # statement of its own, sees every row committed before it.
    _period_ensure(hold)
    return bool(attempt())


def _hold(budget: Budget, at: datetime | None) -> dict:
    """What a run holds of one budget (JSON, kept on the run: WorkflowExecution.budget_holds)."""
    return {"budget": str(budget.pk), "starts_at": period_start(budget, at).isoformat(),
            "hard": budget.mode == Budget.Mode.HARD, "owner": budget.owner_id,
            "limit_usd": usd(budget.limit_usd) or None,
            "limit_tokens": budget.limit_tokens, "thresholds": sorted(budget.thresholds or []), "usd": "0", "tokens": 0}


def budget_reserve(*, budgets: list[Budget], worst: Worst, at: datetime | None = None) -> list[dict]:
    """Reserve `worst` on every hard budget (in the caller's transaction); raise BudgetRefused naming the first
    without room. Returns the run's holds (soft budgets too: they are settled at the end)."""
    holds = []
    for budget in budgets:
        hold = _hold(budget, at)
        if hold["hard"]:
            if not _reserve_more(hold, usd=worst.usd, tokens=worst.tokens):
                # Only a budget that governs this run's owner gets here: its id and limit are theirs to see, its
                # spend (perhaps other users') is not.
                raise BudgetRefused(
                    f"budget {budget.pk} ({budget}) has no room for this run",
                    details=[{"path": "", "code": "budget_exceeded", "message": str(budget.pk)}])
            hold.update(usd=str(worst.usd), tokens=worst.tokens)
        holds.append(hold)
    return holds


def budget_top_up(*, holds: list[dict], usd: Decimal, tokens: int) -> dict | None:
    """Make each hard hold cover `usd` and `tokens` (what the run spent so far plus its next call's worst case),
    reserving the difference. Returns None, or the hold of the first budget that has no room (the holds reserved
    before it keep their top-up: they are released when the run ends)."""
    for hold in holds:
        if not hold["hard"]:
            continue
        more_usd, more_tokens = max(usd - Decimal(hold["usd"]), ZERO), max(tokens - hold["tokens"], 0)
        if not more_usd and not more_tokens:
            continue
        if not _reserve_more(hold, usd=more_usd, tokens=more_tokens):
            return hold
        hold["usd"], hold["tokens"] = str(Decimal(hold["usd"]) + more_usd), hold["tokens"] + more_tokens
    return None


def budget_settle(*, holds: list[dict], usd: Decimal, tokens: int) -> list[dict]:
    """A run ended having spent `usd` and `tokens`: on each budget it held, spent grows by that and its reservation
    goes (in the caller's transaction: the run's terminal one). Returns the thresholds this spend crossed, each
    once per period: the row stays locked by the UPDATE to the commit, so of concurrent runs one sees each
    crossing, and marks it fired."""
    crossings = []
    for hold in holds:
        changes = {"spent_usd": F("spent_usd") + usd, "spent_tokens": F("spent_tokens") + tokens,
                   "reserved_usd": Greatest(F("reserved_usd") - Decimal(hold["usd"]), Value(ZERO),
                                            output_field=BudgetPeriod._meta.get_field("reserved_usd")),
                   "reserved_tokens": Greatest(F("reserved_tokens") - hold["tokens"], Value(0),
                                               output_field=BudgetPeriod._meta.get_field("reserved_tokens")),
                   "updated_at": timezone.now()}
        if not _period_rows(hold).update(**changes):
            _period_ensure(hold)
            _period_rows(hold).update(**changes)
        if hold.get("thresholds") and (usd or tokens):
            crossings += _thresholds_crossed(hold)
    return crossings


def budget_spend_adjust(*, holds: list[dict], usd: Decimal) -> None:
    """Re-pricing: an ended run's cost changed by `usd`, and with it the spend of each period it held (in the
    caller's transaction). Refused (Conflict, nothing changed) where a period's spend is less than what a cut
    would take from it: it has drifted from its runs (reconcile_aggregates --fix sets it again). A period gone
    with its budget has nothing to carry. Thresholds fire at a run's end only, not here."""
    for hold in holds:
        rows = _period_rows(hold)
        if not rows.exists():
            continue
        if usd < 0:
            rows = rows.filter(spent_usd__gte=-usd)
        if not rows.update(spent_usd=F("spent_usd") + usd, updated_at=timezone.now()):
            raise Conflict(f"budget {hold['budget']}'s period from {hold['starts_at']} has spent less than the "
                           f"{-usd} re-pricing takes from it: its spend drifted from its runs")


def _thresholds_crossed(hold: dict) -> list[dict]:
    """The hold's thresholds its period's spend has reached and that have not fired yet, marked fired."""
    row = _period_rows(hold).values("spent_usd", "spent_tokens", "thresholds_fired").first()
    if hold["limit_usd"] is not None:
        limit, spent = Decimal(hold["limit_usd"]), row["spent_usd"]
    else:
        limit, spent = Decimal(hold["limit_tokens"]), Decimal(row["spent_tokens"])
    percent = spent * 100 / limit if limit else Decimal(100)
    fired = set(row["thresholds_fired"] or [])
    new = [threshold for threshold in hold["thresholds"] if threshold <= percent and threshold not in fired]
    if not new:
        return []
    _period_rows(hold).update(thresholds_fired=sorted(fired | set(new)))
    unit = {"limit_usd": hold["limit_usd"]} if hold["limit_usd"] is not None else {"limit_tokens": hold["limit_tokens"]}
    return [{"budget_id": hold["budget"], "threshold": threshold, "period_start": hold["starts_at"],
             "spent": usd(spent) if hold["limit_usd"] is not None else str(spent), "percent": str(percent.quantize(Decimal("0.01"))), **unit} for threshold in new]


def budget_crossings_own(*, crossings: list[dict], holds: list[dict], owner_id) -> list[dict]:
    """The crossings of the run owner's own budgets: the only ones the run's log and audit rows (theirs to read)
    may carry. Another's budget over them (staff's) counts other users' spend: its crossings go to its owner."""
    own = {hold["budget"] for hold in holds if hold.get("owner") == owner_id}
    return [crossing for crossing in crossings if crossing["budget_id"] in own]


def budget_alerts_send(*, crossings: list[dict], in_run: list[dict]) -> None:
    """In the transaction that crossed them (a run's ending): each crossing's webhook delivery, logged there so that
    no process stopping after the commit loses it (then sent by a django-q2 task that retries with backoff) and,
    after the commit, when mail is configured, an email to the budget's owner. A crossing the run's log does not
    carry (`in_run`: budget_crossings_own) gets its audit row after the commit too (the chain's lock is the last
    a run's ending may take), about the budget and by no user: the run's rows are its owner's to read."""
    from django.conf import settings
    from django.db import transaction
    from django_q.tasks import async_task

    budgets = Budget.objects.select_related("owner").in_bulk([c["budget_id"] for c in crossings])
    alerts = []
    for crossing in crossings:
        budget = budgets.get(uuid.UUID(crossing["budget_id"]))
        if budget is None:
            continue
        payload = {"event": "budget_threshold", "budget": {"id": str(budget.pk), "name": budget.name,
                                                           "scope": budget.scope, "target_id": budget.target_id,
                                                           "period": budget.period, "mode": budget.mode},
                   **crossing}
        if budget.webhook_url:
            webhook_delivery_create(subject_type="budget", subject_id=str(budget.pk), url=budget.webhook_url,
                                    event="budget_threshold", payload=payload)
        alerts.append((budget, crossing, payload))

    def after_commit() -> None:
        for budget, crossing, payload in alerts:
            if crossing not in in_run:
                audit_record(action="budget.threshold", target=budget, data=crossing)
            if settings.CHATTER_ALERT_EMAILS and budget.owner.email:
                async_task("budgets.tasks.alert_email_send", str(budget.pk), payload, group="alerts")

    if alerts:
        transaction.on_commit(after_commit)


def budget_create(*, owner, scope: str, target_id: str, period: str, timezone_name: str, mode: str,
                  limit_usd: Decimal | None = None, limit_tokens: int | None = None,
                  thresholds: list[int] | None = None, name: str = "", webhook_url: str = "") -> Budget:
    """A budget (the caller checked that `owner` may set one on that target)."""
    return Budget.objects.create(owner=owner, set_by_staff=owner.is_staff, name=name, scope=scope,
                                 target_id=target_id, period=period,
                                 timezone=timezone_name, mode=mode, limit_usd=limit_usd, limit_tokens=limit_tokens,
                                 thresholds=thresholds if thresholds is not None else [50, 80, 100],
                                 webhook_url=webhook_url)


# What may change once a budget exists. Its scope, target, period and time zone name the periods its spend is
# counted in (and runs in progress hold): changing one would count the new period from nothing, so none changes.
BUDGET_EDITABLE = ("name", "limit_usd", "limit_tokens", "mode", "thresholds", "webhook_url", "is_active")


def budget_update(*, budget: Budget, **changes) -> Budget:
    """Change a budget's editable fields (the caller checked their values: budgets.api.serializers)."""
    fixed = sorted(set(changes) - set(BUDGET_EDITABLE))
    if fixed:
        raise InvalidInput("these budget fields cannot be changed", details=[
            {"path": name, "code": "read_only", "message": f"{name} is fixed once the budget exists"}
            for name in fixed])
    for field, value in changes.items():
        setattr(budget, field, value)
    budget.save(update_fields=list(changes))
    return budget


def budget_deactivate(*, budget: Budget) -> None:
    Budget.objects.filter(pk=budget.pk).update(is_active=False)
    budget.is_active = False


def budgets_current(budgets: list[Budget], *, at: datetime | None = None) -> dict[uuid.UUID, BudgetPeriod]:
    """Each budget's current period by budget id, in one query: its row, or before the period's first run an
    unsaved row of zeros. Every period is the one of one reading of the clock, so what a listing shows of a
    period (its start, its spend) is of that period even as midnight passes."""
    at = at or timezone.now()
    starts = {budget.pk: period_start(budget, at) for budget in budgets}
    if not starts:
        return {}
    match = Q()
    for budget_id, starts_at in starts.items():
        match |= Q(budget_id=budget_id, starts_at=starts_at)
    found = {row.budget_id: row for row in BudgetPeriod.objects.filter(match)}
    return {pk: found.get(pk) or BudgetPeriod(budget_id=pk, starts_at=starts_at) for pk, starts_at in starts.items()}


@dataclass
class CompletionGuard:
    """A call under a hard budget has max_tokens of completion reserved, and providers stop there. One that streams
    far past it (a server ignoring max_tokens) is stopped at a token boundary: past twice that, by the character
    estimate (4 per token), so honest providers are never cut short by the estimate's error."""

    max_tokens: int
    chars: int = 0

    def past(self, text: str) -> bool:
        self.chars += len(text)
        return math.ceil(self.chars / 4) > 2 * self.max_tokens + PROMPT_SLACK
