"""Crons over the official langgraph-sdk against a real daphne server: a cron IS a Chatter schedule (the same row as
/api/v1/schedules/), fired by the same runner (workflows.services.schedules.schedules_run_due, what the django-q2
schedule `chatter-schedules` calls every minute; called here at the cron's due time instead of waiting for it).
A thread's cron fires chat turns in that thread; a stateless one runs without a thread, or keeps a new one."""
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from tests.agent_server.conftest import reconcile_exit_code
from tests.invariants import assert_all
from tests.webhook_receiver import RECEIVER_NETWORKS, SECRET, receiver  # noqa: F401 - a fixture
from webhooks.models import WebhookDelivery
from workflows.models import WorkflowExecution, WorkflowSchedule
from workflows.services.schedules import schedules_run_due

pytestmark = pytest.mark.django_db(transaction=True)
TURN = {"messages": [{"role": "user", "content": "What is 12*7?"}]}


def fire(schedule_id) -> list[WorkflowExecution]:
    """The cron's tick comes: the runner starts what is due (the test settings run django-q2 tasks inline). Another
    schedule due by then fires too (which one comes first depends on the hour the test runs in); the runs of this
    one are returned."""
    due = WorkflowSchedule.objects.get(pk=schedule_id).next_run_at
    return [run for run in schedules_run_due(now=due) if str(run.schedule_id) == str(schedule_id)]


def test_a_thread_cron_is_a_schedule_whose_firings_are_chat_turns_in_the_thread(server, alice, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    cron = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="*/5 * * * *", input=TURN,
                                          metadata={"team": "ops"}, timezone="Europe/Paris")

    schedule = WorkflowSchedule.objects.get(pk=cron["cron_id"])
    assert (schedule.owner, schedule.template.key, schedule.cron, schedule.timezone) == (
        alice, "universal_chat", "*/5 * * * *", "Europe/Paris")
    assert schedule.chat and str(schedule.conversation_id) == thread["thread_id"]
    assert cron["thread_id"] == thread["thread_id"] and cron["assistant_id"] == "universal_chat"
    assert cron["metadata"] == {"team": "ops"} and cron["enabled"] is True and cron["end_time"] is None
    assert cron["payload"]["input"] == TURN and cron["next_run_date"] is not None
    api = APIClient()
    api.force_authenticate(alice)
    listed = api.get("/api/v1/schedules/").json()["results"]
    assert [row["id"] for row in listed] == [cron["cron_id"]]  # the same row
    assert (listed[0]["chat"], listed[0]["conversation_id"], listed[0]["template"]) == (
        True, thread["thread_id"], "universal_chat")

    (first,) = fire(schedule.pk)
    (second,) = fire(schedule.pk)

    runs = client.runs.list(thread["thread_id"])
    assert [run["run_id"] for run in runs] == [str(second.pk), str(first.pk)]
    assert {run["status"] for run in runs} == {"success"} and runs[0]["assistant_id"] == "universal_chat"
    assert runs[0]["metadata"] == {"team": "ops"}  # the cron's metadata, on each of its runs
    for execution in (first, second):
        execution.refresh_from_db()
        assert execution.mode == "scheduled" and execution.workflow_type == "chat"
        assert execution.schedule_id == schedule.pk and str(execution.conversation_id) == thread["thread_id"]
        assert_all(execution)
    assert runs[0]["chatter"]["total_tokens"] == second.total_tokens > 0
    state = client.threads.get_state(thread["thread_id"])
    assert [m["type"] for m in state["values"]["messages"]] == ["human", "ai", "human", "ai"]
    assert "84" in state["values"]["messages"][-1]["content"]
    assert reconcile_exit_code() == 0


def test_crons_are_searched_counted_updated_and_deleted_and_only_by_their_owner(server, alice_key, bob_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    bob = get_sync_client(url=server.langgraph_url, api_key=bob_key)
    thread = client.threads.create()
    on_thread = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 7 * * *",
                                               input=TURN, metadata={"kind": "daily"})
    stateless = client.crons.create("summarize", schedule="0 8 * * 1", input=TURN, metadata={"kind": "weekly"})

    assert stateless["thread_id"] is None and stateless["on_run_completed"] == "delete"
    assert {c["cron_id"] for c in client.crons.search()} == {on_thread["cron_id"], stateless["cron_id"]}
    assert [c["cron_id"] for c in client.crons.search(thread_id=thread["thread_id"])] == [on_thread["cron_id"]]
    assert [c["cron_id"] for c in client.crons.search(assistant_id="summarize")] == [stateless["cron_id"]]
    assert [c["cron_id"] for c in client.crons.search(metadata={"kind": "weekly"})] == [stateless["cron_id"]]
    assert client.crons.search(select=["cron_id"], limit=1) in ([{"cron_id": on_thread["cron_id"]}],
                                                                [{"cron_id": stateless["cron_id"]}])
    with pytest.raises(UnprocessableEntityError):
        client.crons.search(select=["cron_id", "no_such_field"])
    assert client.crons.count() == 2 and client.crons.count(assistant_id="universal_chat") == 1
    assert bob.crons.search() == [] and bob.crons.count() == 0
    with pytest.raises(NotFoundError):
        bob.crons.delete(on_thread["cron_id"])
    with pytest.raises(NotFoundError):
        bob.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 7 * * *", input=TURN)

    end = datetime(2031, 1, 1, tzinfo=dt_timezone.utc)
    updated = client.crons.update(on_thread["cron_id"], schedule="30 6 * * *", enabled=False, end_time=end,
                                  metadata={"kind": "early"})
    assert (updated["schedule"], updated["enabled"], updated["metadata"]) == ("30 6 * * *", False, {"kind": "early"})
    assert updated["end_time"].startswith("2031-01-01") and updated["next_run_date"] is None
    schedule = WorkflowSchedule.objects.get(pk=on_thread["cron_id"])
    assert (schedule.cron, schedule.enabled, schedule.ends_at) == ("30 6 * * *", False, end)
    assert client.crons.search(enabled=False)[0]["cron_id"] == on_thread["cron_id"]
    cleared = client.crons.update(on_thread["cron_id"], end_time=None, enabled=True)
    with pytest.raises(UnprocessableEntityError):
        client.crons.update(on_thread["cron_id"], config={"configurable": "abc"})
    assert cleared["end_time"] is None and cleared["next_run_date"] is not None

    client.crons.delete(on_thread["cron_id"])
    assert [c["cron_id"] for c in client.crons.search()] == [stateless["cron_id"]]
    assert not WorkflowSchedule.objects.filter(pk=on_thread["cron_id"]).exists()


def test_a_stateless_cron_runs_without_a_thread_or_keeps_a_new_one_each_time(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    plain = client.crons.create("universal_chat", schedule="* * * * *", input=TURN)
    keep = client.crons.create("universal_chat", schedule="* * * * *", input=TURN, on_run_completed="keep")

    started = schedules_run_due(now=WorkflowSchedule.objects.get(pk=plain["cron_id"]).next_run_at)

    by_schedule = {str(execution.schedule_id): execution for execution in started}
    without = WorkflowExecution.objects.get(pk=by_schedule[plain["cron_id"]].pk)
    kept = WorkflowExecution.objects.get(pk=by_schedule[keep["cron_id"]].pk)
    assert without.status == kept.status == "completed"
    assert without.conversation_id is None and without.total_tokens > 0 and not Message.objects.filter(
        execution=without).exists()
    assert keep["on_run_completed"] == "keep" and kept.conversation_id is not None
    assert Message.objects.filter(conversation_id=kept.conversation_id).count() == 2
    for execution in (without, kept):
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_a_cron_past_its_end_time_starts_nothing(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    soon = datetime.now(dt_timezone.utc) + timedelta(minutes=90)
    cron = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 * * * *", input=TURN,
                                          end_time=soon)

    assert schedules_run_due(now=soon + timedelta(hours=2)) == []
    assert not WorkflowExecution.objects.exists() and cron["end_time"] is not None


def test_a_templates_cron_runs_honour_its_recursion_limit_as_a_run_does(server, alice_key):
    """config.recursion_limit on a template's cron (on a thread or not) holds each firing's run as it holds a run
    of the template: past it the run fails as LangGraph's GraphRecursionError; a cron updated to a larger one runs to
    its end."""
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    on_thread = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 7 * * *",
                                               input=TURN, config={"recursion_limit": 1})
    stateless = client.crons.create("universal_chat", schedule="0 8 * * *", input=TURN,
                                    config={"recursion_limit": 1})

    fired = [*fire(on_thread["cron_id"]), *fire(stateless["cron_id"])]

    assert len(fired) == 2
    for run in fired:
        run.refresh_from_db()
        assert (run.status, run.error_type) == ("failed", "limit_exceeded")
        assert run.error_message.startswith("Recursion limit of 1 reached")
    client.crons.update(on_thread["cron_id"], config={"recursion_limit": 25})
    (within,) = fire(on_thread["cron_id"])
    within.refresh_from_db()
    assert within.status == "completed"
    assert "84" in client.threads.get_state(thread["thread_id"])["values"]["messages"][-1]["content"]


def test_a_firing_on_a_busy_thread_is_skipped_as_reject_does(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    cron = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="* * * * *", input=TURN)
    delayed = client.runs.create(thread["thread_id"], "universal_chat", input=TURN, after_seconds=3600)  # pending

    assert fire(cron["cron_id"]) == []
    assert [run["run_id"] for run in client.runs.list(thread["thread_id"])] == [delayed["run_id"]]


def test_what_a_cron_cannot_do_is_refused_with_422_and_writes_nothing(server, alice_key):
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()

    refused = [
        {"schedule": "every minute"},  # not a cron
        {"schedule": "* * * * *", "timezone": "Mars/Olympus"},
        {"schedule": "* * * * *", "interrupt_before": ["model"]},
        {"schedule": "* * * * *", "multitask_strategy": "enqueue"},
        {"schedule": "* * * * *", "input": {"messages": []}},  # a thread's cron needs its turn's message
        {"schedule": "* * * * *", "webhook": "http://127.0.0.1:9/hook"},  # this server has no signing secret
        {"schedule": "* * * * *", "context": {"temperature": 9}},
        {"schedule": "* * * * *", "config": {"configurable": "abc"}},
    ]
    for options in refused:
        with pytest.raises(UnprocessableEntityError):
            client.crons.create_for_thread(thread["thread_id"], "universal_chat", **{"input": TURN, **options})
    with pytest.raises(UnprocessableEntityError):
        client.crons.create("universal_chat", schedule="* * * * *", input=TURN, config={"configurable": ["a"]})
    with pytest.raises(httpx.HTTPStatusError) as missing:
        client.crons.create("no_such_assistant", schedule="* * * * *", input=TURN)
    assert missing.value.response.status_code == 404

    assert not WorkflowSchedule.objects.exists() and Conversation.objects.count() == 1


def test_a_cron_webhook_is_posted_each_firings_run_signed(server_with_webhooks, alice_key, receiver, settings):
    settings.CHATTER_WEBHOOK_SECRET = SECRET  # the firing runs (and its delivery is sent) in this process
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS = RECEIVER_NETWORKS
    hook = receiver()
    client = get_sync_client(url=server_with_webhooks.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    cron = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="* * * * *", input=TURN,
                                          webhook=hook.url)

    (execution,) = fire(cron["cron_id"])

    (payload,) = hook.verified()
    execution.refresh_from_db()
    assert payload["run_id"] == str(execution.pk) and payload["thread_id"] == thread["thread_id"]
    assert payload["status"] == "success" and payload["chatter"]["cost"] == str(execution.cost)
    assert payload["chatter"]["total_tokens"] == execution.total_tokens > 0
    delivery = WebhookDelivery.objects.get()
    assert (delivery.subject_type, delivery.subject_id, delivery.status) == ("run", str(execution.pk), "delivered")


async def test_the_async_client_manages_crons_too(server, alice_key):
    client = get_client(url=server.langgraph_url, api_key=alice_key)
    thread = await client.threads.create()

    cron = await client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 9 * * *",
                                                input=TURN)

    assert [c["cron_id"] for c in await client.crons.search()] == [cron["cron_id"]]
    assert await client.crons.count(thread_id=thread["thread_id"]) == 1
    updated = await client.crons.update(cron["cron_id"], schedule="0 10 * * *")
    assert updated["schedule"] == "0 10 * * *"
    await client.crons.delete(cron["cron_id"])
    assert await client.crons.search() == []


def test_a_schedule_made_through_api_v1_is_a_cron_the_sdk_manages(server, alice, alice_key):
    api = APIClient()
    api.force_authenticate(alice)
    made = api.post("/api/v1/schedules/", {"name": "Digest", "template": "summarize", "input": {"message": "hi"},
                                           "cron": "0 7 * * 1-5", "timezone": "Europe/Paris"}, format="json").json()
    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)

    (cron,) = client.crons.search()
    assert (cron["cron_id"], cron["assistant_id"], cron["thread_id"]) == (made["id"], "summarize", None)
    assert (cron["schedule"], cron["timezone"], cron["payload"]["input"]) == ("0 7 * * 1-5", "Europe/Paris",
                                                                             {"message": "hi"})
    updated = client.crons.update(made["id"], metadata={"owner": "alice"}, enabled=False)
    assert updated["metadata"] == {"owner": "alice"} and updated["assistant_id"] == "summarize"
    assert api.get(f"/api/v1/schedules/{made['id']}/").json()["enabled"] is False


def test_a_registered_graphs_cron_fires_runs_of_the_graph_on_its_thread(graph_server, alice_key, settings,
                                                                        monkeypatch):
    from core.env import env_graphs
    from tests.agent_server.conftest import GRAPHS

    monkeypatch.setenv("CHATTER_GRAPHS", str(GRAPHS))
    settings.CHATTER_GRAPHS = env_graphs("CHATTER_GRAPHS")  # the firings run in this process
    client = get_sync_client(url=graph_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    start = {"messages": [], "value": "init", "items": []}

    cron = client.crons.create_for_thread(thread["thread_id"], "stateful", schedule="0 7 * * *", input=start)
    stateless = client.crons.create("stateful", schedule="0 8 * * *", input=start)

    schedule = WorkflowSchedule.objects.get(pk=cron["cron_id"])
    assert schedule.graph is not None and not schedule.chat and cron["assistant_id"] == "stateful"
    assert {c["cron_id"] for c in client.crons.search(assistant_id="stateful", limit=10)} == {
        cron["cron_id"], stateless["cron_id"]}
    (run,) = fire(schedule.pk)
    run.refresh_from_db()
    assert run.status == "waiting" and str(run.conversation_id) == thread["thread_id"]  # at the graph's question
    assert client.threads.get_state(thread["thread_id"])["values"]["items"] == ["greeted", "tool"]
    (alone,) = fire(stateless["cron_id"])
    alone.refresh_from_db()
    assert alone.status == "waiting" and alone.conversation_id is None
    client.crons.delete(stateless["cron_id"])
    assert not WorkflowSchedule.objects.filter(pk=stateless["cron_id"]).exists()


def test_a_threads_crons_leave_with_it_and_each_is_audited(server, alice, alice_key):
    """schedule.* is audited however a schedule goes: deleted as a cron, or with the thread it fires into."""
    from audit.models import AuditEvent

    client = get_sync_client(url=server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    kept = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 7 * * *", input=TURN)
    deleted = client.crons.create_for_thread(thread["thread_id"], "universal_chat", schedule="0 8 * * *", input=TURN)
    client.crons.delete(deleted["cron_id"])

    client.threads.delete(thread["thread_id"])

    assert not WorkflowSchedule.objects.exists()
    gone = AuditEvent.objects.filter(action="schedule.deleted").order_by("id")
    assert [(row.target_id, row.actor_id, row.data["conversation_id"]) for row in gone] == [
        (deleted["cron_id"], alice.pk, thread["thread_id"]), (kept["cron_id"], alice.pk, thread["thread_id"])]
