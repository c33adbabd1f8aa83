"""Budget alerts: each threshold fires once per period, as the run that crosses it ends: a `budget_threshold`
event in that run's log (before its terminal event) and on /ws/events/, an audit row, a webhook signed with
HMAC-SHA256 that a receiver verifies (a receiver that answers 500 is retried with backoff by django-q2, and the
delivery log shows each attempt), and an email when mail is configured. The webhook's delivery is written with the
run's end: a process that stops right after that commit loses none, the sweep sends it."""
import json
import threading
from datetime import timedelta

import httpx
import pytest
from django.core import mail
from django.db.models import F
from django.utils import timezone
from django_q.models import Schedule
from django_q.scheduler import scheduler
from websockets.sync.client import connect

from audit.models import AuditEvent
from audit.services import audit_queue_flush
from budgets.models import Budget, BudgetPeriod
from tests.factories import ApiTokenFactory, BudgetFactory
from tests.webhook_receiver import RECEIVER_NETWORKS, SECRET, receiver  # noqa: F401 - a fixture
from webhooks.models import WebhookDelivery
from webhooks.tasks import lost_after
from workflows.models import ExecutionEvent, WorkflowExecution


pytestmark = pytest.mark.usefixtures("clear_of_midnight")  # thresholds fire once per day: one day per test


@pytest.fixture
def alerts_on(settings):
    settings.CHATTER_WEBHOOK_SECRET = SECRET
    settings.CHATTER_WEBHOOK_RETRY_S = 30
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS  # the test receivers, on 127.0.0.1
    settings.CHATTER_ALERT_EMAILS = True


def chat(api, message):
    response = api.post("/api/v1/chat/", {"message": message, "max_tokens": 40}, format="json")
    assert response.status_code == 201, response.content
    return WorkflowExecution.objects.get(pk=response.json()["execution"]["id"])


@pytest.mark.django_db(transaction=True)
def test_each_threshold_fires_once_with_event_audit_signed_webhook_and_email(api, alice, alerts_on, receiver):
    hook = receiver()
    alice.email = "alice@example.com"
    alice.save()
    budget = api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 100, "mode": "soft",
                                           "thresholds": [20, 50, 90], "webhook_url": hook.url},
                      format="json").json()

    first = chat(api, "hello")  # about 30 tokens: 20% crossed
    second = chat(api, "hello again")  # about 60: 50% crossed
    third = chat(api, "and once more, please")  # about 95: 90%

    spent = BudgetPeriod.objects.get().spent_tokens  # of a 100-token limit: spent tokens are percent
    fired = [threshold for threshold in (20, 50, 90) if threshold <= spent]
    assert len(fired) >= 2
    audit_queue_flush()  # a run's rows are queued for the chain (PostgreSQL), as a read of the trail sees them
    audited = AuditEvent.objects.filter(action="budget.threshold").order_by("id")
    assert [row.data["threshold"] for row in audited] == fired
    events = [(e.execution_id, e.data["threshold"]) for e in
              ExecutionEvent.objects.filter(event="budget_threshold").order_by("created_at", "seq")]
    assert [threshold for _, threshold in events] == fired
    for execution in (first, second, third):  # the terminal event stays the last
        assert ExecutionEvent.objects.filter(execution=execution).order_by("-seq").first().event == "workflow_completed"
    payloads = hook.verified()
    assert len(payloads) == len(hook.received) == len(fired)
    assert [p["threshold"] for p in payloads] == fired and {p["budget"]["id"] for p in payloads} == {budget["id"]}
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}
    assert len(mail.outbox) == len(fired) and mail.outbox[0].to == ["alice@example.com"]
    assert BudgetPeriod.objects.get().thresholds_fired == fired


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_answers_500_is_retried_with_backoff_and_the_log_shows_it(api, alerts_on, receiver):
    hook = receiver(statuses=[500, 500])
    api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 100, "mode": "soft",
                                  "thresholds": [10], "webhook_url": hook.url}, format="json")

    chat(api, "hello")

    delivery = WebhookDelivery.objects.get()
    assert (delivery.subject_type, delivery.event) == ("budget", "budget_threshold")
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("retrying", 1, 500)
    (retry,) = Schedule.objects.filter(func="webhooks.tasks.webhook_deliver")
    first_wait = retry.next_run - timezone.now()
    assert timedelta(seconds=25) < first_wait <= timedelta(seconds=30)

    Schedule.objects.update(next_run=timezone.now() - timedelta(seconds=1))  # the clock moves on
    scheduler()  # django-q2's scheduler runs what is due (inline: the test settings' sync mode)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("retrying", 2)
    second = Schedule.objects.filter(func="webhooks.tasks.webhook_deliver", next_run__gt=timezone.now()).get()
    assert timedelta(seconds=55) < second.next_run - timezone.now() <= timedelta(seconds=60)  # doubled

    Schedule.objects.update(next_run=timezone.now() - timedelta(seconds=1))
    scheduler()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert [entry["status_code"] for entry in delivery.log] == [500, 500, 200]
    assert len(hook.verified()) == 3  # the same signed alert each time


@pytest.mark.django_db  # its transactions never commit: nothing is run after a commit, as in a process stopped then
def test_an_alerts_webhook_is_written_by_the_run_that_crossed_it_and_sent_by_the_sweep_if_its_process_stopped(
        api, alerts_on, receiver):
    hook = receiver()
    budget = api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 100, "mode": "soft",
                                           "thresholds": [10], "webhook_url": hook.url}, format="json").json()

    chat(api, "hello")

    delivery = WebhookDelivery.objects.get()  # written with the run's end, though no task was queued
    assert (delivery.subject_type, delivery.event, delivery.status, delivery.attempts) == (
        "budget", "budget_threshold", "pending", 0)
    assert hook.received == [] and BudgetPeriod.objects.get().thresholds_fired == [10]
    WebhookDelivery.objects.update(next_attempt_at=F("next_attempt_at") - lost_after())  # the clock moves on
    Schedule.objects.filter(func="webhooks.tasks.webhook_sweep_task").update(
        next_run=timezone.now() - timedelta(seconds=1))
    scheduler()  # the sweep: the attempt lost, retried after its backoff
    Schedule.objects.filter(func="webhooks.tasks.webhook_deliver").update(
        next_run=timezone.now() - timedelta(seconds=1))
    scheduler()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2) and delivery.log[0]["error"].startswith("lost: ")
    (payload,) = hook.verified()
    assert (payload["threshold"], payload["budget"]["id"]) == (10, budget["id"])


@pytest.mark.django_db
def test_a_webhook_needs_the_signing_secret(api, settings):
    settings.CHATTER_WEBHOOK_SECRET = ""

    response = api.post("/api/v1/budgets/", {"scope": "user", "period": "day", "limit_tokens": 100, "mode": "soft",
                                             "webhook_url": "https://example.com/hook"}, format="json")

    assert response.status_code == 400 and not Budget.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_crossing_reaches_the_owners_events_websocket(alice, shared_daphne_server):
    """A real server: alice's /ws/events/ client sees `budget_threshold` among her run's events, before its end."""
    server = shared_daphne_server()
    key = ApiTokenFactory(user=alice).key
    BudgetFactory(owner=alice, period="day", limit_tokens=100, mode="soft", thresholds=[1])
    received, subscribed = [], threading.Event()

    def listen():
        with connect(f"{server.ws_url}/ws/events/?token={key}", open_timeout=10) as socket:
            subscribed.set()
            while True:
                envelope = json.loads(socket.recv(timeout=30))
                received.append(envelope)
                if envelope["event"] == "workflow_completed":
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert subscribed.wait(15)
    response = httpx.post(f"{server.base_url}/api/v1/chat/", json={"message": "hello"}, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 201, response.text
    listener.join(30)

    names = [envelope["event"] for envelope in received]
    assert "budget_threshold" in names and names.index("budget_threshold") < names.index("workflow_completed")
    crossing = received[names.index("budget_threshold")]["data"]
    assert crossing["threshold"] == 1 and crossing["limit_tokens"] == 100
