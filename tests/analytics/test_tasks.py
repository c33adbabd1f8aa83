"""The django-q2 task of analytics: the hourly reconciliation, and its schedule."""
import logging

import pytest
from django_q.models import Schedule

from analytics.services import reconcile_schedule_ensure
from analytics.tasks import aggregates_reconcile_task
from conversations.models import Conversation
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db


def test_the_reconcile_task_reports_drift_in_the_log(alice, caplog):
    execution = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk)
    assert aggregates_reconcile_task() == 0
    Conversation.objects.filter(pk=execution.conversation_id).update(message_count=7)

    with caplog.at_level(logging.ERROR, logger="analytics.tasks"):
        assert aggregates_reconcile_task() == 1
    assert f"conversation {execution.conversation_id}" in caplog.text and "message_count" in caplog.text


def test_its_schedule_exists_once_and_runs_hourly():
    reconcile_schedule_ensure()
    reconcile_schedule_ensure()  # a restart or re-migrate

    [schedule] = Schedule.objects.filter(name="chatter-reconcile-aggregates")
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        "analytics.tasks.aggregates_reconcile_task", Schedule.HOURLY, -1)
