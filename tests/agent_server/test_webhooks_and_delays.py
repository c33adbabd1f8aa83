"""`webhook` and `after_seconds` on runs, over the official langgraph-sdk against a real daphne server and a real
django-q2 worker: when a run with a webhook ends (success, or cancelled: "interrupted"), the run as LangGraph's Run
with Chatter's tokens and cost is POSTed to a local receiver that checks the HMAC signature; a receiver that fails
first is retried with backoff (the webhooks app's one delivery path, as budget alerts use). A delayed run is pending
until it is due: the server that took it hands it to the workers then, django-q2's one-off schedule is the
fallback; the recovery sweep leaves it alone meanwhile."""
import json
import re
import time
from datetime import timedelta

import pytest
from django.db.models import F
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule
from django_q.scheduler import scheduler
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import UnprocessableEntityError

from tests.agent_server.conftest import reconcile_exit_code
from tests.fixtures_server import start_worker, stop_process
from tests.invariants import assert_all
from tests.webhook_receiver import (  # noqa: F401 - a fixture
    NON_PUBLIC_URLS, RECEIVER_NETWORK, RECEIVER_NETWORKS, SECRET, receiver)
from webhooks import statements
from webhooks.models import WebhookDelivery
from webhooks.tasks import lost_after
from workflows.models import WorkflowExecution, WorkflowSchedule
from workflows.services.recovery import execution_sweep

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}


@pytest.fixture
def worker(tmp_path):
    process = start_worker(tmp_path, CHATTER_WEBHOOK_SECRET=SECRET, CHATTER_WEBHOOK_RETRY_S="30",
                           CHATTER_WEBHOOK_ALLOWED_NETWORKS=RECEIVER_NETWORK)
    yield process
    stop_process(process)


def due_now(func: str) -> None:
    """The clock moves on: django-q2's scheduler (inline here: the test settings' sync mode) runs what is due."""
    Schedule.objects.filter(func=func).update(next_run=timezone.now() - timedelta(seconds=1))
    scheduler()


def test_a_run_with_a_webhook_is_posted_signed_when_it_ends_and_retried_until_received(
        server_with_webhooks, worker, alice_key, receiver, settings):
    settings.CHATTER_WEBHOOK_SECRET, settings.CHATTER_WEBHOOK_RETRY_S = SECRET, 30
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS  # the retry is delivered in this process
    hook = receiver(statuses=[500])
    client = get_sync_client(url=server_with_webhooks.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    client.runs.wait(thread["thread_id"], "universal_chat", input=TURN, webhook=hook.url, metadata={"via": "sdk"})
    hook.wait_for(1)  # the worker's first attempt, answered 500

    execution = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    deadline = time.monotonic() + 30
    while not Schedule.objects.filter(func="webhooks.tasks.webhook_deliver").exists():  # logged as it answers
        assert time.monotonic() < deadline, "the failed attempt was not logged"
        time.sleep(0.05)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.subject_type, delivery.subject_id, delivery.event) == ("run", str(execution.pk), "run_ended")
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("retrying", 1, 500)
    (retry,) = Schedule.objects.filter(func="webhooks.tasks.webhook_deliver")
    assert timedelta(seconds=20) < retry.next_run - timezone.now() <= timedelta(seconds=30)
    stop_process(worker)  # the retry comes from this process's scheduler, at its due time

    due_now("webhooks.tasks.webhook_deliver")

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, [entry["status_code"] for entry in delivery.log]) == (
        "delivered", 2, [500, 200])
    first, second = hook.verified()
    assert first == second  # the same signed run each time
    assert first["run_id"] == str(execution.pk) and first["thread_id"] == thread["thread_id"]
    assert (first["assistant_id"], first["status"], first["metadata"]) == ("universal_chat", "success", {"via": "sdk"})
    assert first["chatter"]["total_tokens"] == execution.total_tokens > 0
    assert first["chatter"]["cost"] == str(execution.cost)
    assert first["chatter"]["prompt_tokens"] == execution.prompt_tokens
    assert [m["type"] for m in first["values"]["messages"]] == ["human", "ai", "tool", "ai"]
    assert "84" in first["values"]["messages"][-1]["content"]
    assert_all(execution)


@pytest.mark.django_db  # its transactions never commit: nothing is run after a commit, as in a process stopped then
def test_a_runs_webhook_is_written_by_its_end_and_sent_by_the_sweep_when_its_process_stopped_after_the_commit(
        alice_key, receiver, settings):
    settings.CHATTER_WEBHOOK_SECRET, settings.CHATTER_WEBHOOK_RETRY_S = SECRET, 30
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    hook = receiver()

    response = Client().post("/langgraph/runs/wait", json.dumps({"assistant_id": "universal_chat", "input": TURN,
                                                                 "webhook": hook.url}),
                             content_type="application/json", headers={"x-api-key": alice_key})

    assert response.status_code == 200, response.content
    execution = WorkflowExecution.objects.get()
    delivery = WebhookDelivery.objects.get()  # written with the run's end, though no task was queued
    assert (delivery.subject_type, delivery.subject_id, delivery.event) == ("run", str(execution.pk), "run_ended")
    assert (delivery.status, delivery.attempts, hook.received) == ("pending", 0, [])
    due_now("webhooks.tasks.webhook_sweep_task")  # its task may still be waiting for a worker: not lost yet
    assert WebhookDelivery.objects.get().attempts == 0
    WebhookDelivery.objects.update(next_attempt_at=F("next_attempt_at") - lost_after())  # the clock moves on

    due_now("webhooks.tasks.webhook_sweep_task")

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("retrying", 1, None)
    assert delivery.last_error.startswith("lost: ")
    due_now("webhooks.tasks.webhook_deliver")  # retried after its backoff, as any failed attempt
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    (payload,) = hook.verified()
    assert (payload["id"], payload["run_id"], payload["status"]) == (str(delivery.pk), str(execution.pk), "success")
    assert payload["chatter"]["total_tokens"] == execution.total_tokens > 0
    assert "84" in payload["values"]["messages"][-1]["content"]


def test_the_delivery_a_runs_end_writes_names_every_column_of_a_delivery():
    assert set(statements.DELIVERY_COLUMNS) == {field.attname for field in WebhookDelivery._meta.concrete_fields}
    assert re.findall(r'"(\w+)"', statements.DELIVERY_INSERT.split(")")[0])[1:] == list(statements.DELIVERY_COLUMNS)


def test_runs_without_a_webhook_deliver_nothing(server_with_webhooks, alice_key):
    client = get_sync_client(url=server_with_webhooks.langgraph_url, api_key=alice_key)

    client.runs.wait(None, "universal_chat", input=TURN)

    assert not WebhookDelivery.objects.exists()


async def test_a_delayed_run_cancelled_before_it_starts_posts_its_end_as_interrupted(
        server_with_webhooks, worker, alice_key, receiver):
    hook = receiver()
    client = get_client(url=server_with_webhooks.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()

    run = await client.runs.create(thread["thread_id"], "universal_chat", input=TURN, after_seconds=3600,
                                   webhook=hook.url)
    assert run["status"] == "pending"
    cancelled = await client.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    assert cancelled["status"] == "interrupted"

    await _wait_for(hook, 1)
    (payload,) = hook.verified()
    assert payload["run_id"] == run["run_id"] and payload["status"] == "interrupted"
    assert payload["chatter"]["total_tokens"] == 0 and payload["error"]


async def _wait_for(hook, count):
    from asgiref.sync import sync_to_async

    await sync_to_async(hook.wait_for)(count)


def test_a_delayed_run_waits_pending_until_its_time_then_runs_as_a_chat_turn(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    run = client.runs.create(thread["thread_id"], "universal_chat", input=TURN, after_seconds=600)

    execution = WorkflowExecution.objects.get(pk=run["run_id"])
    assert run["status"] == "pending" and execution.mode == "background"
    (start,) = Schedule.objects.filter(func="workflows.tasks.execution_run_task")
    assert timedelta(seconds=590) < start.next_run - timezone.now() <= timedelta(seconds=600)
    assert execution_sweep(now=timezone.now() + timedelta(seconds=400)) == []  # past its timeout, not yet due
    execution.refresh_from_db()
    assert execution.status == "pending" and execution.started_at is None

    due_now("workflows.tasks.execution_run_task")

    values = client.runs.join(thread["thread_id"], run["run_id"])
    assert [m["type"] for m in values["messages"]] == ["human", "ai", "tool", "ai"] and "84" in values["messages"][-1]["content"]
    assert client.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"
    execution.refresh_from_db()
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_a_delayed_run_is_handed_to_the_workers_when_due_by_the_process_that_took_it(server, alice_key, tmp_path):
    """django-q2's scheduler looks for due schedules only every 30 s or so: the server that took the run hands it
    to the queue when it is due (here no worker runs, so no scheduler either), and drops the one-off schedule
    kept as the fallback, so the run is delivered once."""
    from django_q.models import OrmQ

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    run = client.runs.create(thread["thread_id"], "universal_chat", input=TURN, after_seconds=1)

    fallback = Schedule.objects.filter(name=f"execution-{run['run_id']}")
    deadline = time.monotonic() + 60  # (a bound for a run that is never handed over, not a measure of when)
    while fallback.exists():  # dropped once the run's task is queued
        assert time.monotonic() < deadline, "the due run was not handed to the workers"
        time.sleep(0.05)
    assert OrmQ.objects.count() == 1  # its task (signed with the server's key: not read here)
    worker = start_worker(tmp_path)
    try:
        values = client.runs.join(thread["thread_id"], run["run_id"])
    finally:
        stop_process(worker)
    assert "84" in values["messages"][-1]["content"]
    assert client.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"
    assert_all(WorkflowExecution.objects.get(pk=run["run_id"]))
    assert reconcile_exit_code() == 0


def test_bad_delays_and_webhooks_are_refused_and_write_nothing(server_with_webhooks, server, alice_key):
    signing = get_sync_client(url=server_with_webhooks.langgraph_url, api_key=alice_key)
    unsigned = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = signing.threads.create()

    for client, options in ((signing, {"after_seconds": -1}), (signing, {"webhook": "ftp://example.com/hook"}),
                            (signing, {"webhook": "not a url"}),
                            (unsigned, {"webhook": "http://127.0.0.1:9/hook"})):  # no signing secret there
        with pytest.raises(UnprocessableEntityError):
            client.runs.create(thread["thread_id"], "universal_chat", input=TURN, **options)

    assert not WorkflowExecution.objects.exists() and not Schedule.objects.filter(
        func="workflows.tasks.execution_run_task").exists()


def test_it_refuses_run_and_cron_webhooks_to_non_public_destinations_and_writes_nothing(daphne_server, alice_key):
    server = daphne_server(CHATTER_WEBHOOK_SECRET=SECRET)  # signs webhooks; allows no internal network
    client = get_sync_client(url=f"{server.base_url}/langgraph", api_key=alice_key)
    thread = client.threads.create()
    cron = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 9 * * *", input=TURN)
    surfaces = {
        "run": lambda url: client.runs.create(thread["thread_id"], "universal_chat", input=TURN, webhook=url),
        "thread's cron": lambda url: client.crons.create_for_thread(thread["thread_id"], "universal_chat",
                                                                    schedule="0 9 * * *", input=TURN, webhook=url),
        "cron": lambda url: client.crons.create("universal_chat", schedule="0 9 * * *", input=TURN, webhook=url),
        "cron update": lambda url: client.crons.update(cron["cron_id"], webhook=url),
    }

    for url in NON_PUBLIC_URLS:
        for surface, send in surfaces.items():
            with pytest.raises(UnprocessableEntityError) as refused:
                send(url)
            errors = refused.value.response.json()["errors"]
            assert [(e["path"], e["code"]) for e in errors] == [("webhook", "forbidden_destination")], (surface, url)

    assert not WorkflowExecution.objects.exists()
    assert list(WorkflowSchedule.objects.values_list("webhook", flat=True)) == [""]


async def test_a_delayed_runs_stream_follows_it_once_it_starts(server, alice_key):
    import asyncio

    from asgiref.sync import sync_to_async

    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()

    async def stream() -> list:
        return [part async for part in client.runs.stream(thread["thread_id"], "universal_chat", input=TURN,
                                                          stream_mode=["values"], after_seconds=600)]

    streaming = asyncio.ensure_future(stream())
    exists = sync_to_async(Schedule.objects.filter(func="workflows.tasks.execution_run_task").exists)
    for _ in range(300):
        if await exists():
            break
        await asyncio.sleep(0.1)
    await sync_to_async(due_now)("workflows.tasks.execution_run_task")
    parts = await asyncio.wait_for(streaming, 60)

    assert parts[0].event == "metadata" and parts[-1].event == "end"
    last = [part.data for part in parts if part.event == "values"][-1]
    assert [m["type"] for m in last["messages"]] == ["human", "ai", "tool", "ai"] and "84" in last["messages"][-1]["content"]
