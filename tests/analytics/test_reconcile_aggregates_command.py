from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import F

from analytics.models import TemplateAnalytics, UsageRollup
from conversations.models import Conversation
from conversations.services import message_delete
from tests.analytics.usage import assert_usage_exact
from tests.invariants import assert_i1, assert_i2
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db


def reconcile(*args):
    out = StringIO()
    try:
        call_command("reconcile_aggregates", *args, stdout=out, stderr=out)
    except SystemExit as exit_:
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def runs(alice):
    executions = [execution_run(execution_id=execution_create(ChatRequest(owner=alice, message=m)).pk)
                  for m in ("What is 12*7?", "hello")]
    failed = execution_create(ChatRequest(owner=alice, message="What is 1+1?", config={"max_total_tokens": 3}))
    executions.append(execution_run(execution_id=failed.pk))
    message_delete(message_id=executions[1].messages.get(role="user").pk)
    return executions


def test_it_reports_zero_drift_after_runs_failures_and_deletes(runs):
    code, output = reconcile()
    assert code == 0 and "zero drift" in output


def test_it_reports_zero_drift_while_a_run_is_in_progress(alice):
    pending = execution_create(ChatRequest(owner=alice, message="What is 12*7?", mode="background"))
    code, output = reconcile()
    assert code == 0 and "zero drift" in output  # its user message is not in the rollups yet, nor counted

    execution_run(execution_id=pending.pk)
    code, output = reconcile()
    assert code == 0 and "zero drift" in output


def test_it_finds_a_drifted_conversation_and_fixes_it(runs):
    conversation = runs[0].conversation
    Conversation.objects.filter(pk=conversation.pk).update(total_tokens=999999, prompt_tokens=999999 - 1,
                                                           completion_tokens=1)
    code, output = reconcile()
    assert code == 1 and f"conversation {conversation.pk}" in output and "total_tokens" in output

    code, output = reconcile("--fix")
    assert code == 0 and "fixed 1" in output
    assert_i1(conversation)


def test_it_finds_drifted_template_analytics_and_fixes_them(runs):
    TemplateAnalytics.objects.filter(template__key="universal_chat").update(
        total_executions=1, successful_executions=1, failed_executions=0)
    code, output = reconcile()
    assert code == 1 and "template universal_chat" in output
    assert reconcile("--fix")[0] == 0
    assert_i2()


def test_it_finds_drifted_usage_rollups_and_rebuilds_them(runs):
    expected = assert_usage_exact()
    UsageRollup.objects.filter(messages__gt=0).update(messages=F("messages") + 1)
    UsageRollup.objects.filter(failed_executions=1).update(
        failed_executions=0, completed_executions=F("completed_executions") + 1)

    code, output = reconcile()
    assert code == 1 and "drift usage" in output and "messages: stored" in output
    assert "failed_executions" in output

    code, output = reconcile("--fix")
    assert code == 0 and "zero drift" in output
    assert assert_usage_exact() == expected


def test_it_finds_a_missing_usage_rollup(runs):
    UsageRollup.objects.all().delete()

    code, output = reconcile()
    assert code == 1 and "drift usage" in output
    assert reconcile("--fix")[0] == 0
