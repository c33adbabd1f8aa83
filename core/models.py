"""Model pieces every app's accounted rows share: the token/cost columns and their checks (abstract: no table)."""
from decimal import Decimal

from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import F, Q

MONEY = {"max_digits": 20, "decimal_places": 8, "default": Decimal("0")}
# The most an amount a person sets may be (a budget's limit, a price, an experiment's budget), in USD. SQLite keeps a
# decimal as a double and Django reads it back to 15 significant digits: up to 10^7 with 8 places it comes back
# exact; past ~10^12 it comes back with 13 digits before the point, more than the column's 20 digits allow, and every
# read of the row fails (decimal.InvalidOperation). PostgreSQL's numeric(20, 8) holds it either way.
MONEY_LIMIT = Decimal("10000000")
# The most an integer a person sets may be, by the column it goes to, on every database: past it SQLite raises
# OverflowError and PostgreSQL an out-of-range error, or keeps it wrapped (Django binds an IntegerField's value as
# psycopg's Int4, whose binary dumper sends its low 32 bits: 2**32 + 7 was stored as 7). A 400 names it instead.
INT_MAX = 2**31 - 1  # IntegerField, PositiveIntegerField
BIGINT_MAX = 2**63 - 1  # BigIntegerField, PositiveBigIntegerField
MONEY_SET = {"max_digits": 20, "decimal_places": 8, "validators": [MaxValueValidator(MONEY_LIMIT)]}  # (the admin's forms)


class TokenTotals(models.Model):
    """Inclusive prompt/completion tokens; total is always their sum (a CHECK enforces it)."""

    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=Q(total_tokens=F("prompt_tokens") + F("completion_tokens")),
                name="%(app_label)s_%(class)s_total_is_sum",
            ),
        ]


def non_negative(*fields: str, model: str) -> list[models.CheckConstraint]:
    return [
        models.CheckConstraint(condition=Q(**{f"{field}__gte": 0}), name=f"{model}_{field}_non_negative")
        for field in fields
    ]


class HotReadsVersion(models.Model):
    """The version of the hot reads' memo (core.cache.HotReads) where no cache is shared by every process: one row,
    given a new random value in the transaction of every change of the rows the memo holds, so every process sees
    the new version exactly when it sees the change. Made by migrate (core.apps), and again after a flush."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)  # (the one row)
    version = models.BigIntegerField()

    class Meta:
        db_table = "core_hot_reads_version"
