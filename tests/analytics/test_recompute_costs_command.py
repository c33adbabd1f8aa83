from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from analytics.models import ModelPrice
from tests.invariants import assert_all
from workflows.models import LLMCall
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db


def test_it_reprices_past_calls_and_carries_the_change_to_every_total(alice):
    execution = execution_run(execution_id=execution_create(owner=alice, message="What is 12*7?", chat=True).pk)
    calls = list(LLMCall.objects.filter(execution=execution))
    # A corrected local price that was in force before the run: $10 in, $20 out per million.
    ModelPrice.objects.create(provider="local", model_pattern=r"local-.*", input_per_million=10,
                              output_per_million=20, effective_from=timezone.now() - timedelta(days=1))
    out = StringIO()
    call_command("recompute_costs", "--since", "2000-01-01", stdout=out)

    assert "re-priced 2 LLM calls" in out.getvalue()
    expected = sum((Decimal(c.prompt_tokens) * 10 + Decimal(c.completion_tokens) * 20) / 10**6 for c in calls)
    execution.refresh_from_db()
    assert execution.cost == expected.quantize(Decimal("0.00000001"))
    assert_all(execution)


def test_a_price_from_after_the_call_changes_nothing(alice):
    execution = execution_run(execution_id=execution_create(owner=alice, message="hi", chat=True).pk)
    before = execution.cost
    ModelPrice.objects.create(provider="local", model_pattern=r"local-.*", input_per_million=10,
                              output_per_million=20, effective_from=timezone.now() + timedelta(days=1))
    call_command("recompute_costs", stdout=StringIO())
    execution.refresh_from_db()
    assert execution.cost == before


def test_a_bad_date_is_a_clear_error():
    with pytest.raises(CommandError, match="--since"):
        call_command("recompute_costs", "--since", "last tuesday")
