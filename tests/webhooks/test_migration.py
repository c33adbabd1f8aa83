"""Budget alert deliveries moved from budgets to the webhooks app: the rows logged before keep their id, status,
attempts and log, now about ("budget", the budget's id), and a retry django-q2 had scheduled still runs."""
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django_q.models import Schedule

from webhooks.models import WebhookDelivery

BEFORE = [("budgets", "0002_alerts"), ("webhooks", "0001_initial")]
AFTER = [("budgets", "0003_webhook_delivery_moved")]


@pytest.mark.django_db(transaction=True)
def test_deliveries_logged_before_the_move_are_kept(alice):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    delivery_id = uuid.uuid4()
    try:
        old_apps = executor.loader.project_state(BEFORE).apps
        Budget = old_apps.get_model("budgets", "Budget")
        OldDelivery = old_apps.get_model("budgets", "WebhookDelivery")
        budget = Budget.objects.create(owner_id=alice.pk, scope="user", target_id=str(alice.pk), period="day",
                                       limit_tokens=100, mode="soft", webhook_url="https://example.com/hook")
        OldDelivery.objects.create(id=delivery_id, budget=budget, url=budget.webhook_url, payload={"threshold": 50},
                                   status="retrying", attempts=2, last_status_code=500,
                                   log=[{"at": "x", "status_code": 500, "error": "HTTP 500"}] * 2)
        Schedule.objects.create(func="budgets.tasks.webhook_deliver", args=repr(str(delivery_id)),
                                schedule_type=Schedule.ONCE, next_run=timezone.now() + timedelta(minutes=1))
        executor.loader.build_graph()
        executor.migrate(AFTER)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    moved = WebhookDelivery.objects.get(pk=delivery_id)
    assert (moved.subject_type, moved.subject_id) == ("budget", str(budget.pk))
    assert (moved.status, moved.attempts, moved.last_status_code, len(moved.log)) == ("retrying", 2, 500, 2)
    assert moved.payload == {"threshold": 50} and moved.event == "budget_threshold"
    assert Schedule.objects.get(args=repr(str(delivery_id))).func == "webhooks.tasks.webhook_deliver"
