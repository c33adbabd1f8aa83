"""Budgets: a limit on what runs may spend (USD or tokens) per period, on a user, an API key, a group of users, a
template, or everyone; and, per budget and period, what is spent and what runs in progress hold in reserve."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.cache import RenewsHotReads
from core.models import MONEY, MONEY_SET, non_negative

# A budget has one limit, USD or tokens: what the API and the admin's form say of one with both, or neither.
ONE_LIMIT = "give limit_usd or limit_tokens (one of them)"


def default_thresholds() -> list[int]:
    return [50, 80, 100]


class Budget(models.Model):
    class Scope(models.TextChoices):
        USER = "user"
        KEY = "key"
        GROUP = "group"
        TEMPLATE = "template"
        GLOBAL = "global"

    class Period(models.TextChoices):
        DAY = "day"
        WEEK = "week"
        MONTH = "month"
        TOTAL = "total"

    class Mode(models.TextChoices):
        HARD = "hard"  # refuse runs that would pass it, stop runs that reach it
        SOFT = "soft"  # count and alert only

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=100, blank=True, default="")
    scope = models.CharField(max_length=16, choices=Scope.choices)
    # What the budget is on, as text: a user's pk, an API key's public id, a group's pk, a template's id; "" for
    # global. Not a foreign key: budgets sit below the apps whose rows they name (docs/architecture.md).
    target_id = models.CharField(max_length=64, blank=True, default="")
    period = models.CharField(max_length=8, choices=Period.choices)
    timezone = models.CharField(max_length=64, default="UTC")
    limit_usd = models.DecimalField(**MONEY_SET, null=True, blank=True)
    limit_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.HARD)
    thresholds = models.JSONField(default=default_thresholds)  # percent of the limit; each alerts once a period
    # Alerts go to the budget's audit trail, the runs' owners' feeds (for a budget of the run's owner: another's
    # counts others' spend), this URL (signed, CHATTER_WEBHOOK_SECRET) and, when Django's mail settings are
    # configured, the budget owner's email.
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    # Whom the budget binds is fixed when it is set: set by staff, every run in its scope; set by anyone else, only
    # its owner's own runs in that scope (a user governs no one else's spend, and learns nothing of it). Kept, not
    # read from the owner at run time, so a promotion never widens a user's old budgets.
    set_by_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RenewsHotReads.as_manager()  # (a bare update renews the memo of whether any is active: core.cache)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["scope", "target_id"])]
        constraints = [
            models.CheckConstraint(condition=Q(limit_usd__isnull=True) ^ Q(limit_tokens__isnull=True),
                                   name="budget_limit_usd_xor_tokens",
                                   violation_error_message=ONE_LIMIT),
            *non_negative("limit_usd", model="budget"),
        ]

    def __str__(self) -> str:
        limit = f"${self.limit_usd}" if self.limit_usd is not None else f"{self.limit_tokens} tokens"
        return f"{self.scope} {self.target_id or '*'}: {limit} per {self.period} ({self.mode})"


class BudgetPeriod(models.Model):
    """One budget's counters for one period (`starts_at`, in UTC, of the period in the budget's time zone). A
    period's row is made by the first run in it (INSERT … ON CONFLICT DO NOTHING: a rollover has no race)."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="periods")
    starts_at = models.DateTimeField()
    spent_usd = models.DecimalField(**MONEY)
    spent_tokens = models.PositiveBigIntegerField(default=0)
    reserved_usd = models.DecimalField(**MONEY)
    reserved_tokens = models.PositiveBigIntegerField(default=0)
    thresholds_fired = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "starts_at"], name="budget_period_unique"),
            *non_negative("spent_usd", "reserved_usd", model="budget_period"),
        ]

    def __str__(self) -> str:
        return f"{self.budget_id} from {self.starts_at:%Y-%m-%d %H:%M}"
