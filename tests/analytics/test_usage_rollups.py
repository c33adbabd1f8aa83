"""Usage rollups through the services that write their source rows: every run, LLM call and message is booked
once, on the right row, and failures, cancels, deletes and re-pricing keep them equal to the raw rows."""
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics.models import UsageRollup
from analytics.services import usage_rollups_ensure, usage_rollups_rebuild
from conversations.models import Conversation, Message
from conversations.services import conversation_delete, message_delete
from tests.analytics.usage import assert_usage_exact, totals
from tests.factories import ModelPriceFactory, WorkflowTemplateFactory, run_request
from tests.workflows.test_engine import LONG_STORY
from workflows.models import LLMCall, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import (
    execution_cancel,
    execution_create,
    execution_run,
    execution_stream,
)

pytestmark = pytest.mark.django_db

LINEAR = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


def run(**kwargs) -> WorkflowExecution:
    return execution_run(execution_id=execution_create(run_request(**kwargs)).pk)


def rollup_of(execution: WorkflowExecution, **dims) -> UsageRollup:
    return UsageRollup.objects.get(
        day=execution.completed_at.date(), owner=execution.owner, template_id=execution.template_id,
        conversation_id=execution.conversation_id, **{"provider": execution.provider, "model": execution.model,
                                                        **dims})


def test_a_chat_turn_is_booked_on_its_day_owner_model_template_and_conversation(alice):
    execution = run(owner=alice, message="hello", chat=True)

    row = rollup_of(execution)
    assert (row.executions, row.completed_executions, row.messages, row.llm_calls) == (1, 1, 2, 1)
    assert (row.provider, row.model, row.template.key) == ("local", "local-echo-1", "universal_chat")
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(row, field) == getattr(execution, field) > 0
    assert row.cost == execution.cost > 0
    assert UsageRollup.objects.count() == 1
    assert_usage_exact()


def test_a_tools_turn_books_every_llm_call(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True)

    row = rollup_of(execution)
    calls = LLMCall.objects.filter(execution=execution)
    assert row.llm_calls == calls.count() == 2
    assert row.total_tokens == sum(c.total_tokens for c in calls) == execution.total_tokens
    assert row.cost == sum(c.cost for c in calls)
    assert_usage_exact()


def test_a_second_turn_adds_to_the_same_row(alice):
    first = run(owner=alice, message="hello", chat=True)
    second = run(owner=alice, message="again", chat=True, conversation_id=first.conversation_id)

    row = rollup_of(second)
    assert (row.executions, row.messages, row.llm_calls) == (2, 4, 2)
    assert row.total_tokens == first.total_tokens + second.total_tokens
    assert row.cost == first.cost + second.cost
    assert_usage_exact()


def test_a_failed_run_is_counted_as_failed_and_keeps_its_usage(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True, config={"max_total_tokens": 5})

    assert execution.status == "failed" and execution.total_tokens > 0
    row = rollup_of(execution)
    assert (row.executions, row.failed_executions, row.completed_executions) == (1, 1, 0)
    assert row.total_tokens == execution.total_tokens and row.cost == execution.cost
    assert_usage_exact()


def test_a_failing_node_fails_the_run_without_tokens(alice):
    graph = {
        "nodes": [{"id": "start", "type": "start"},
                  {"id": "bad", "type": "variable", "config": {"operation": "increment", "variable_name": "x"}},
                  {"id": "end", "type": "end"}],
        "edges": [{"source": "start", "target": "bad"}, {"source": "bad", "target": "end"}],
    }
    execution = run(owner=alice, graph=graph, variables={"x": "text"})

    assert execution.status == "failed"
    row = rollup_of(execution)
    assert (row.executions, row.failed_executions, row.llm_calls, row.total_tokens, row.messages) == (1, 1, 0, 0, 0)
    assert_usage_exact()


def test_a_run_cancelled_before_it_started_is_counted_with_no_tokens(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))
    execution_cancel(execution=execution, actor=alice)
    execution.refresh_from_db()

    row = rollup_of(execution)
    assert (row.executions, row.cancelled_executions, row.llm_calls, row.total_tokens) == (1, 1, 0, 0)
    assert row.messages == 2  # the user message and the empty assistant reply
    assert_usage_exact()


def test_a_pending_run_is_not_booked_until_it_ends(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))

    assert not UsageRollup.objects.exists()  # its user message too is booked when the run ends
    assert_usage_exact()
    execution = execution_run(execution_id=execution.pk)
    row = rollup_of(execution)
    assert (row.executions, row.messages, row.llm_calls) == (1, 2, 1)
    assert_usage_exact()


def test_a_run_books_its_calls_and_messages_in_one_statement_when_it_ends(alice):
    with CaptureQueriesContext(connection) as queries:
        execution = run(owner=alice, message="What is 12*7?", chat=True)

    writes = [q["sql"] for q in queries.captured_queries
              if "usagerollup" in q["sql"].lower() and not q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(writes) == 1 and writes[0].lstrip().upper().startswith(("INSERT", "WITH"))
    # on PostgreSQL the template's analytics row is written by that same statement
    template_writes = [q["sql"] for q in queries.captured_queries if "templateanalytics" in q["sql"].lower()]
    assert len(template_writes) == 1
    if connection.vendor == "postgresql":
        assert template_writes == writes
    row = rollup_of(execution)
    assert (row.executions, row.messages, row.llm_calls) == (1, 2, 2)
    assert_usage_exact()


def test_a_message_deleted_while_its_run_is_pending_is_never_counted(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))
    assert message_delete(message_id=Message.objects.get(execution=execution).pk) is True
    assert not UsageRollup.objects.exists()

    execution = execution_run(execution_id=execution.pk)

    assert rollup_of(execution).messages == 1  # the reply only
    assert_usage_exact()


@pytest.mark.django_db(transaction=True)
def test_a_run_cancelled_while_running_keeps_the_usage_it_had(alice, settings):
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 100  # as test_engine's cancelled turn: seconds of reply after a word
    execution = execution_create(ChatRequest(owner=alice, message=LONG_STORY, mode="stream"))
    cancelled = False
    for envelope in execution_stream(execution_id=execution.pk):
        if envelope["event"] == "token" and not cancelled:  # once: tokens already sent follow the cancel, and the
            execution_cancel(execution=execution, actor=alice)  # run may have ended by the next (a Conflict then)
            cancelled = True
    execution.refresh_from_db()

    assert execution.status == "cancelled" and execution.total_tokens > 0
    row = rollup_of(execution)
    assert (row.executions, row.cancelled_executions) == (1, 1)
    assert row.total_tokens == execution.total_tokens and row.cost == execution.cost
    assert_usage_exact()


def test_a_run_without_a_conversation_has_no_messages(alice):
    execution = run(owner=alice, graph=LINEAR, message="hi")

    row = rollup_of(execution)
    assert (row.conversation_id, row.template_id, row.executions, row.messages, row.llm_calls) == (
        None, None, 1, 0, 1)
    assert_usage_exact()


def test_each_llm_call_is_booked_on_its_own_model(alice):
    graph = {
        "nodes": [{"id": "start", "type": "start"}, {"id": "a", "type": "model"},
                  {"id": "b", "type": "model", "config": {"model": "local-large-2"}}, {"id": "end", "type": "end"}],
        "edges": [{"source": "start", "target": "a"}, {"source": "a", "target": "b"}, {"source": "b", "target": "end"}],
    }
    execution = run(owner=alice, graph=graph, message="hi")

    run_model, other = rollup_of(execution), rollup_of(execution, model="local-large-2")
    assert (run_model.executions, run_model.llm_calls) == (1, 1)
    assert (other.executions, other.llm_calls) == (0, 1)
    assert run_model.total_tokens + other.total_tokens == execution.total_tokens
    assert run_model.cost + other.cost == execution.cost
    assert_usage_exact()


def test_deleting_a_message_takes_it_out_of_the_count_but_not_out_of_the_spend(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True)
    reply = Message.objects.get(execution=execution, role="assistant")

    assert message_delete(message_id=reply.pk) is True
    row = rollup_of(execution)
    assert row.messages == 1
    assert (row.executions, row.total_tokens, row.cost) == (1, execution.total_tokens, execution.cost)
    assert_usage_exact()


def test_deleting_every_message_of_a_row_leaves_its_runs(alice):
    execution = run(owner=alice, message="hello", chat=True)
    for message in Message.objects.all():
        message_delete(message_id=message.pk)

    assert rollup_of(execution).messages == 0
    assert_usage_exact()


def test_deleting_a_conversation_moves_its_runs_to_no_conversation(alice):
    kept = run(owner=alice, message="hello", chat=True)
    doomed = run(owner=alice, message="What is 12*7?", chat=True)
    both = run(owner=alice, graph=LINEAR, message="hi")  # already on the no-conversation row

    Conversation.objects.get(pk=doomed.conversation_id).delete()  # as the admin does: cascade, no service

    doomed.refresh_from_db()
    assert doomed.conversation_id is None
    rows = assert_usage_exact()
    nowhere = totals(rows, conversation_id=None)
    assert nowhere["executions"] == 2 and nowhere["messages"] == 0
    assert nowhere["total_tokens"] == doomed.total_tokens + both.total_tokens
    assert totals(rows, conversation_id=kept.conversation_id)["messages"] == 2


def test_deleting_a_conversation_through_its_service_keeps_the_rollups_exact(alice):
    doomed = run(owner=alice, message="What is 12*7?", chat=True)
    run(owner=alice, message="again", chat=True, conversation_id=doomed.conversation_id)

    conversation_delete(conversation=Conversation.objects.get(pk=doomed.conversation_id), actor=alice)

    rows = assert_usage_exact()
    assert totals(rows)["messages"] == 0 and totals(rows)["executions"] == 2
    assert totals(rows, conversation_id=None)["llm_calls"] == 3


def test_deleting_a_template_moves_its_rows_to_no_template(alice, bob):
    template = WorkflowTemplateFactory(key="mine", name="Mine", owner=alice, is_public=True, graph=LINEAR)
    alices = run(owner=alice, template="mine", message="hi")
    bobs = run(owner=bob, template="mine", message="hi", conversation_id=run(
        owner=bob, message="hello", chat=True).conversation_id)

    template_id = template.pk
    template.delete()

    rows = assert_usage_exact()
    assert totals(rows, template_id=template_id)["executions"] == 0
    assert totals(rows, owner_id=bob.pk, template_id=None)["total_tokens"] == bobs.total_tokens
    assert totals(rows, owner_id=alice.pk, template_id=None)["cost"] == alices.cost


def test_deleting_a_user_takes_their_rows_and_leaves_others(alice, bob):
    WorkflowTemplateFactory(key="mine", name="Mine", owner=alice, is_public=True, graph=LINEAR)
    run(owner=alice, template="mine", message="hi")
    run(owner=alice, message="hello", chat=True)
    bobs = run(owner=bob, template="mine", message="hi")

    alice.delete()

    rows = assert_usage_exact()
    assert {key[1] for key in rows} == {bob.pk}
    assert totals(rows)["cost"] == bobs.cost


def test_repricing_carries_the_change_to_the_rollups(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True)
    ModelPriceFactory(provider="local", model_pattern=r"local-.*", input_per_million=10,
                      output_per_million=20, effective_from=timezone.now() - timedelta(days=1))

    call_command("recompute_costs", stdout=StringIO())

    execution.refresh_from_db()
    assert rollup_of(execution).cost == execution.cost
    assert_usage_exact()


def test_a_rebuild_recomputes_every_row_from_the_source_rows(alice, bob):
    run(owner=alice, message="What is 12*7?", chat=True)
    run(owner=bob, graph=LINEAR, message="hi")
    expected = assert_usage_exact()
    UsageRollup.objects.update(executions=7, completed_executions=7, messages=40)
    UsageRollup.objects.create(key=UsageRollup.key_for(timezone.now().date(), bob.pk, "x", "y", None, None),
                               day=timezone.now().date(), owner=bob, provider="x", model="y", messages=3)

    assert usage_rollups_rebuild() == len(expected)

    assert assert_usage_exact() == expected


def test_a_database_without_rollups_gets_them_built_once(alice):
    run(owner=alice, message="hello", chat=True)
    expected = assert_usage_exact()
    UsageRollup.objects.all().delete()

    assert usage_rollups_ensure() == len(expected)
    assert usage_rollups_ensure() == 0  # there are rows now: nothing to do
    assert assert_usage_exact() == expected


def test_the_money_sums_are_exact_decimals(alice):
    for message in ("What is 12*7?", "hello", "What is 3+4?"):
        run(owner=alice, message=message, chat=True)

    stored = sum(row.cost for row in UsageRollup.objects.all())
    assert stored == sum(c.cost for c in LLMCall.objects.all())
    assert isinstance(stored, Decimal) and stored.as_tuple().exponent >= -8
