from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from analytics.models import ModelPrice
from core.cache import hot_reads
from tests.factories import ModelPriceFactory
from tests.invariants import assert_all
from workflows.models import LLMCall
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db


def test_it_reprices_past_calls_and_carries_the_change_to_every_total(alice):
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="What is 12*7?")).pk)
    calls = list(LLMCall.objects.filter(execution=execution))
    # A corrected local price that was in force before the run: $10 in, $20 out per million.
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=10,
                      output_per_million=20, effective_from=timezone.now() - timedelta(days=1))
    out = StringIO()
    call_command("recompute_costs", "--since", "2000-01-01", stdout=out)

    assert "re-priced 2 LLM calls" in out.getvalue()
    expected = sum((Decimal(c.prompt_tokens) * 10 + Decimal(c.completion_tokens) * 20) / 10**6 for c in calls)
    execution.refresh_from_db()
    assert execution.cost == expected.quantize(Decimal("0.00000001"))
    assert_all(execution)


def test_a_price_from_after_the_call_changes_nothing(alice):
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk)
    before = execution.cost
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=10,
                      output_per_million=20, effective_from=timezone.now() + timedelta(days=1))
    call_command("recompute_costs", stdout=StringIO())
    execution.refresh_from_db()
    assert execution.cost == before


@pytest.mark.parametrize("since", ["last tuesday", "2026-02-30", "2027-02-29", "2026-02-30T10:00:00Z"])
def test_a_bad_date_is_a_clear_error(since):
    """A day that does not exist (30 February, 29 February of a common year) is refused like any other bad date."""
    with pytest.raises(CommandError, match="--since"):
        call_command("recompute_costs", "--since", since)


# --- the model a server reports is not always the one asked for ------------------------------------------
# A llama.cpp server started without --alias reports its model file's path; OpenAI reports a dated snapshot.
# A call is priced by the model the run asked for (the one whose price row let the run start), and records the
# model the server reported: at run time and when re-pricing alike.
REPORTED = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
USAGE = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
         "prompt_tokens_details": {"cached_tokens": 400}}


def openai_turn(owner, stub, *, model=REPORTED):
    stub.reply(content="Paris is the capital.", usage=USAGE, model=model)
    execution = execution_create(ChatRequest(owner=owner, message="Capital of France?",
                                             config={"provider": "openai", "model": "tiny-local", "enable_tools": False}))
    execution = execution_run(execution_id=execution.pk)
    execution.refresh_from_db()
    assert execution.status == "completed", execution.error_message
    return execution


@pytest.fixture
def tiny_local_price(db):
    """A price for the requested name only: $1 in, $0.50 cached, $2 out per million (none matches the path)."""
    return ModelPriceFactory(provider="openai", model_pattern="tiny-local", input_per_million=1,
                             cached_input_per_million=Decimal("0.5"), output_per_million=2,
                             effective_from=timezone.now() - timedelta(days=1))


def test_a_call_is_priced_by_the_requested_model_and_records_the_reported_one(alice, openai_server,
                                                                              tiny_local_price):
    execution = openai_turn(alice, openai_server)

    call = LLMCall.objects.get(execution=execution)
    assert (call.model, call.requested_model, call.unpriced) == (REPORTED, "tiny-local", False)
    # (1000 − 400) × $1 + 400 × $0.50 + 200 × $2, per million
    assert call.cost == execution.cost == Decimal("0.00120000")


def test_re_pricing_a_call_whose_server_reported_another_name_keeps_its_cost(alice, openai_server,
                                                                             tiny_local_price):
    execution = openai_turn(alice, openai_server)
    out, err = StringIO(), StringIO()
    call_command("recompute_costs", stdout=out, stderr=err)

    assert "re-priced 0 LLM calls" in out.getvalue() and err.getvalue() == ""
    execution.refresh_from_db()
    assert execution.cost == LLMCall.objects.get(execution=execution).cost == Decimal("0.00120000")
    assert execution.conversation.messages.get(role="assistant").cost == execution.cost
    assert_all(execution)


def test_re_pricing_uses_the_requested_models_new_price(alice, openai_server, tiny_local_price):
    execution = openai_turn(alice, openai_server)
    ModelPriceFactory(provider="openai", model_pattern="tiny-local", input_per_million=10,
                      output_per_million=20, effective_from=tiny_local_price.effective_from + timedelta(hours=1))
    call_command("recompute_costs", stdout=StringIO())

    execution.refresh_from_db()
    assert execution.cost == Decimal("0.01400000")  # 1000 × $10 + 200 × $20, per million
    assert_all(execution)


def test_a_call_left_without_a_price_keeps_its_cost_is_flagged_and_reported(alice, openai_server, tiny_local_price):
    execution = openai_turn(alice, openai_server)
    ModelPrice.objects.filter(pk=tiny_local_price.pk).update(is_active=False)
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("recompute_costs", stdout=out, stderr=err)

    assert exit_.value.code == 1
    assert "1 LLM calls have no price" in err.getvalue() and "openai/tiny-local: 1" in err.getvalue()
    call = LLMCall.objects.get(execution=execution)
    assert call.unpriced and call.cost == Decimal("0.00120000")  # never a silent 0
    execution.refresh_from_db()
    assert execution.cost == call.cost
    assert_all(execution)

    # Once it has a price again, re-pricing prices it and clears the flag.
    ModelPrice.objects.filter(pk=tiny_local_price.pk).update(is_active=True)
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    call_command("recompute_costs", stdout=StringIO(), stderr=StringIO())
    call.refresh_from_db()
    assert not call.unpriced and call.cost == Decimal("0.00120000")


def test_a_call_made_when_its_model_had_no_price_is_flagged_then_priced_once_one_is_added(
        alice, openai_server, tiny_local_price):
    openai_server.reply(content="Paris.", usage=USAGE, model=REPORTED)
    pending = execution_create(ChatRequest(owner=alice, message="Capital of France?",
                                           config={"provider": "openai", "model": "tiny-local", "enable_tools": False}))
    ModelPrice.objects.filter(pk=tiny_local_price.pk).update(is_active=False)  # withdrawn before the run ran
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    execution = execution_run(execution_id=pending.pk)

    call = LLMCall.objects.get(execution=execution)
    assert (call.unpriced, call.cost, call.prompt_tokens) == (True, Decimal(0), 1000)  # unknown, and says so
    err = StringIO()
    with pytest.raises(SystemExit):
        call_command("recompute_costs", stdout=StringIO(), stderr=err)
    assert "openai/tiny-local: 1" in err.getvalue()

    ModelPrice.objects.filter(pk=tiny_local_price.pk).update(is_active=True)
    hot_reads.renew()  # (a bare UPDATE sends no signal: renewed as a change would)
    out = StringIO()
    call_command("recompute_costs", stdout=out, stderr=StringIO())
    assert "re-priced 1 LLM calls" in out.getvalue()
    call.refresh_from_db()
    execution.refresh_from_db()
    assert (call.unpriced, call.cost, execution.cost) == (False, Decimal("0.00120000"), Decimal("0.00120000"))
    assert_all(execution)


def test_a_run_repriced_after_its_templates_figures_were_rebuilt_keeps_every_slot_exact(alice):
    """reconcile_aggregates --fix rebuilds a drifted template's slots, each from the runs whose id picks it; a later
    re-pricing of a run adds its change to its own slot, which holds its figures: every slot stays the sums over its
    runs, and the template's figures the sums over its slots (I2)."""
    from analytics.models import TemplateAnalytics

    runs = [execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk) for _ in range(4)]
    template_id = runs[0].template_id
    TemplateAnalytics.objects.filter(template_id=template_id).update(total_executions=99, successful_executions=99)
    call_command("reconcile_aggregates", "--fix", stdout=StringIO())
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=10,
                      output_per_million=20, effective_from=timezone.now() - timedelta(days=1))

    call_command("recompute_costs", "--since", "2000-01-01", stdout=StringIO())

    expected: dict = {}
    for execution in runs:
        execution.refresh_from_db()
        slot = expected.setdefault(TemplateAnalytics.slot_of(execution.pk), {"n": 0, "cost": Decimal("0")})
        slot["n"] += 1
        slot["cost"] += execution.cost
        assert_all(execution)
    stored = {row.slot: {"n": row.total_executions, "cost": row.total_cost}
              for row in TemplateAnalytics.objects.filter(template_id=template_id)}
    assert stored == expected


def test_issue_46_a_run_of_no_conversation_repriced_after_a_rebuild_changes_its_dimensions_row(alice):
    """A run of no conversation books on a slot of its dimensions' rows (analytics.models.UsageRollup); a rebuild
    of the rollups puts each dimensions' figures in slot 0. A re-pricing after it, down, takes the change from that
    row: the totals stay exact, nothing is lost or refused by the rows' CHECKs."""
    from analytics.models import UsageRollup
    from analytics.services import aggregates_drift, usage_rollups_rebuild
    from workflows.services.run_requests import ExecutionRequest

    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=10, output_per_million=20,
                      effective_from=timezone.now() - timedelta(days=2))
    hot_reads.forget()
    while True:  # (one run in 16 books on slot 0 already)
        execution = execution_run(execution_id=execution_create(ExecutionRequest(
            owner=alice, graph=graph, message="What is 12*7?")).pk)
        if UsageRollup.slot_of(execution):
            break
    usage_rollups_rebuild()
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=1, output_per_million=2,
                      effective_from=timezone.now() - timedelta(days=1))
    call_command("recompute_costs", "--since", "2000-01-01", stdout=StringIO())

    execution.refresh_from_db()
    calls = LLMCall.objects.filter(execution=execution)
    assert execution.cost == sum((Decimal(c.prompt_tokens) * 1 + Decimal(c.completion_tokens) * 2) / 10**6
                                 for c in calls).quantize(Decimal("0.00000001"))
    assert_all(execution)
    assert aggregates_drift() == []


def test_it_carries_the_change_to_the_spend_of_the_budgets_the_runs_held(alice):
    """A run under a budget settles its cost on the budget's period when it ends; re-pricing its calls changes that
    spend by as much as the run's cost, so the budget's period still holds the sum over its runs."""
    from budgets.models import BudgetPeriod
    from tests.factories import BudgetFactory

    BudgetFactory(owner=alice, limit_usd=Decimal("100"), mode="soft")
    runs = [execution_run(execution_id=execution_create(ChatRequest(owner=alice, message=f"turn {n}")).pk)
            for n in range(2)]
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=30,
                      output_per_million=13, effective_from=timezone.now() - timedelta(days=1))

    call_command("recompute_costs", "--since", "2000-01-01", stdout=StringIO())

    for execution in runs:
        execution.refresh_from_db()
    assert BudgetPeriod.objects.get().spent_usd == sum(execution.cost for execution in runs) > 0
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out)
    assert "zero drift" in out.getvalue()


def test_a_usage_rollup_missing_re_prices_nothing_and_says_which(alice):
    """All or nothing: a rollup row that cannot take its change stops the command before anything is re-priced."""
    from analytics.models import UsageRollup

    runs = [execution_run(execution_id=execution_create(ChatRequest(owner=alice, message=f"turn {n}")).pk)
            for n in range(2)]
    before = {call.pk: call.cost for call in LLMCall.objects.all()}
    UsageRollup.objects.filter(conversation_id=runs[1].conversation_id).delete()  # the later run's rows lost
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=30,
                      output_per_million=13, effective_from=timezone.now() - timedelta(days=1))

    with pytest.raises(CommandError, match="nothing was re-priced: the usage rollup of .* is missing"):
        call_command("recompute_costs", "--since", "2000-01-01", stdout=StringIO())

    assert {call.pk: call.cost for call in LLMCall.objects.all()} == before
    for execution in runs:
        execution.refresh_from_db()
        assert_all(execution)
