"""analytics/statements.py's named statements on the database the suite runs on (SQLite, and PostgreSQL with
DATABASE_URL): the two upserts name every column of their model and add to the stored counters as they collide
(money exact, a moment given replacing the stored one, a missing one keeping it); the prices read are those in force,
newest first."""
import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import models
from django.utils import timezone

from analytics import statements
from analytics.models import ModelPrice, TemplateAnalytics, UsageRollup
from analytics.selectors import TEMPLATE_COUNTERS, TEMPLATE_MOMENTS, prices_in_force, usage_dimensions
from core.db import statements_run
from tests.factories import ModelPriceFactory, UserFactory, WorkflowTemplateFactory

pytestmark = pytest.mark.django_db


def _columns(sql: str) -> tuple[str, ...]:
    return tuple(re.findall(r'"(\w+)"', sql.split(")")[0])[1:])


def _updated(sql: str) -> set[str]:
    return set(re.findall(r'"(\w+)" = ', sql.split("DO UPDATE SET")[1]))


def test_each_upsert_names_every_column_and_adds_every_counter():
    rollup = {f.attname for f in UsageRollup._meta.concrete_fields if not isinstance(f, models.AutoField)}
    assert set(statements.USAGE_ROLLUP_COLUMNS) == rollup
    assert _columns(statements.USAGE_ROLLUPS_ADD) == statements.USAGE_ROLLUP_COLUMNS
    assert _updated(statements.USAGE_ROLLUPS_ADD) == set(UsageRollup.COUNTERS)
    slot = {f.attname for f in TemplateAnalytics._meta.concrete_fields if not isinstance(f, models.AutoField)}
    assert set(statements.TEMPLATE_ANALYTICS_COLUMNS) == slot
    assert _columns(statements.TEMPLATE_ANALYTICS_ADD) == statements.TEMPLATE_ANALYTICS_COLUMNS
    assert _updated(statements.TEMPLATE_ANALYTICS_ADD) == {*TEMPLATE_COUNTERS, *TEMPLATE_MOMENTS}


def _rollup(owner, model: str, **counters) -> dict:
    dims = usage_dimensions(day=date(2026, 11, 23), owner_id=owner.pk, provider="openai", model=model,
                            template_id=None, conversation_id=None)
    return {**dims, **{name: 0 for name in UsageRollup.COUNTERS}, "cost": Decimal("0"), **counters}


def test_usage_rows_are_inserted_then_added_to_exactly():
    owner = UserFactory()
    first = _rollup(owner, "gpt-4o-mini", executions=1, completed_executions=1, llm_calls=2, prompt_tokens=20,
                    completion_tokens=10, total_tokens=30, cost=Decimal("0.00000001"))
    statements_run(statements.usage_rollups_add([first]))
    statements_run(statements.usage_rollups_add([
        {**first, "llm_calls": 1, "prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12,
         "cost": Decimal("123.45678901")},
        _rollup(owner, "gpt-4o", messages=1)]))

    stored = {row.model: row for row in UsageRollup.objects.filter(owner=owner)}
    mini = stored["gpt-4o-mini"]
    assert (mini.executions, mini.llm_calls, mini.prompt_tokens, mini.total_tokens) == (2, 3, 27, 42)
    assert mini.cost == Decimal("123.45678902")
    assert stored["gpt-4o"].messages == 1 and stored["gpt-4o"].key == _rollup(owner, "gpt-4o")["key"]


def test_a_template_slot_is_made_then_added_to_and_keeps_a_moment_not_given():
    template = WorkflowTemplateFactory()
    used, succeeded = timezone.now() - timedelta(hours=1), timezone.now() - timedelta(minutes=30)
    row = {"template_id": template.pk, "slot": 3, **{name: 0 for name in TEMPLATE_COUNTERS},
           **{name: None for name in TEMPLATE_MOMENTS}}
    statements_run(statements.template_analytics_add({**row, "total_executions": 1, "successful_executions": 1,
                                                      "total_cost": Decimal("0.5"), "last_used_at": used,
                                                      "last_success_at": succeeded}))
    later = timezone.now()
    statements_run(statements.template_analytics_add({**row, "total_executions": 1, "failed_executions": 1,
                                                      "total_cost": Decimal("0.25"), "last_used_at": later,
                                                      "last_failure_at": later}))

    slot = TemplateAnalytics.objects.get(template=template, slot=3)
    assert (slot.total_executions, slot.successful_executions, slot.failed_executions) == (2, 1, 1)
    assert slot.total_cost == Decimal("0.75")
    assert (slot.last_used_at, slot.last_success_at, slot.last_failure_at) == (later, succeeded, later)


def test_the_prices_in_force_are_the_providers_and_the_wildcards_active_ones_newest_first():
    now = timezone.now()
    older = ModelPriceFactory(provider="openai", model_pattern="gpt-.*", effective_from=now - timedelta(days=2))
    newer = ModelPriceFactory(provider="openai", model_pattern="gpt-.*", effective_from=now - timedelta(days=1))
    wildcard = ModelPriceFactory(provider=ModelPrice.WILDCARD, model_pattern=".*", effective_from=now - timedelta(days=3))
    others = [ModelPriceFactory(provider="openai", model_pattern="gpt-.*", effective_from=now + timedelta(days=1)),
              ModelPriceFactory(provider="openai", model_pattern="gpt-.*", effective_from=now, is_active=False),
              ModelPriceFactory(provider="anthropic", model_pattern="claude-.*", effective_from=now - timedelta(days=1))]

    made = {price.pk for price in (older, newer, wildcard, *others)}
    found = [price for price in prices_in_force(provider="openai", at=now) if price.pk in made]  # (not the seeded)

    assert [price.pk for price in found] == [newer.pk, older.pk, wildcard.pk]
    assert [(p.input_per_million, p.effective_from) for p in found] == [
        (p.input_per_million, p.effective_from) for p in (newer, older, wildcard)]
