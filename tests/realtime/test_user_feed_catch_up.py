"""A user's feed (/ws/events/) gets every persisted event of the user's runs even when the hub lost them: the
channel layer is at most once (a publishing process whose `group_send` timed out under load drops that message,
and the next second's), so the feed reads back from the database what it did not get live (workflows/realtime.py).

The run here is real; its events are lost as a worker's were when its first `group_send` timed out
(tests/realtime/test_scale_out.py under load): the publish of this run's events never reaches the hub."""
import asyncio

import pytest
from channels.db import database_sync_to_async

from workflows import events
from workflows.models import ExecutionEvent
from workflows.realtime import user_feed, user_subscribe
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lost_publishes(monkeypatch):
    """Which of the run's hand-offs to the hub are lost (by their order); conversation_updated goes with them."""
    lost: set[int] = set()
    handed = []
    publish = events.hub.publish

    def dropping(envelopes, **kwargs):
        handed.append(envelopes)
        if len(handed) - 1 not in lost:
            publish(envelopes, **kwargs)

    monkeypatch.setattr(events.hub, "publish", dropping)
    return lost


async def feed_until(feed, done, timeout: float = 10) -> list[dict]:
    got: list[dict] = []
    async with asyncio.timeout(timeout):
        async for envelope in feed:
            got.append(envelope)
            if done(got):
                return got
    return got


async def more(feed, seconds: float) -> list[dict]:
    got: list[dict] = []
    try:
        async with asyncio.timeout(seconds):
            async for envelope in feed:
                got.append(envelope)
    except TimeoutError:
        pass
    return got


@database_sync_to_async
def chat_run(user, message: str):
    execution = execution_create(ChatRequest(owner=user, message=message))
    execution_run(execution_id=execution.pk)
    execution.refresh_from_db()
    persisted = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", "event"))
    return execution, persisted


def persisted_of(got: list[dict], execution) -> list[tuple[int, str]]:
    return [(e["seq"], e["event"]) for e in got if e["execution_id"] == str(execution.pk) and e["seq"] is not None]


def updates_of(got: list[dict]) -> list[dict]:
    return [e["data"] for e in got if e["event"] == "conversation_updated"]


async def test_item_03_a_run_whose_every_event_the_hub_lost_reaches_the_users_feed(alice, lost_publishes):
    lost_publishes.update(range(1000))  # every hand-off of the run, as a worker's in its paused second
    feed = user_feed(alice.pk, subscription=user_subscribe(alice.pk), poll_s=0.1)
    try:
        first = asyncio.ensure_future(anext(feed))
        execution, persisted = await chat_run(alice, "What is 12*7?")
        got = [await asyncio.wait_for(first, 10)]
        got += await feed_until(feed, lambda got: updates_of(got))
        got += await more(feed, 0.5)
    finally:
        await feed.aclose()

    assert execution.status == "completed" and persisted[-1][1] == "workflow_completed"
    assert persisted_of(got, execution) == persisted  # every one, in order, once
    conversation = await database_sync_to_async(lambda: execution.conversation)()
    assert updates_of(got) == [{"conversation_id": str(conversation.pk), "message_count": 2,
                                "prompt_tokens": conversation.prompt_tokens,
                                "completion_tokens": conversation.completion_tokens,
                                "total_tokens": conversation.total_tokens, "total_cost": f"{conversation.total_cost:.8f}"}]


async def test_item_03_events_the_hub_lost_before_later_ones_are_read_back_in_order_once(alice, lost_publishes):
    lost_publishes.add(0)  # the run's first hand-off (workflow_started and what came with it)
    feed = user_feed(alice.pk, subscription=user_subscribe(alice.pk), poll_s=0.1)
    try:
        first = asyncio.ensure_future(anext(feed))
        execution, persisted = await chat_run(alice, "hello there")
        got = [await asyncio.wait_for(first, 10)]
        got += await feed_until(feed, lambda got: any(e["event"] == "workflow_completed" for e in got))
        got += await more(feed, 0.5)  # a few looks at the database later: nothing is relayed twice
    finally:
        await feed.aclose()

    assert persisted[0][1] == "workflow_started"
    assert persisted_of(got, execution) == persisted


async def test_a_conversation_deleted_between_the_feeds_two_reads_leaves_it_running():
    """The feed reads a run's conversation after the run: a conversation deleted in between gives no
    conversation_updated, and the feed goes on (it raised DoesNotExist, which ended the user's socket)."""
    from workflows.realtime import _conversation_updated

    assert await _conversation_updated("00000000-0000-0000-0000-000000000001",
                                       "00000000-0000-0000-0000-000000000002") == []


async def test_item_03_a_run_that_ends_before_the_feed_is_first_read_is_read_back_from_its_subscription(
        lost_publishes):
    """The feed's log starts when its subscription was made, not when the feed is first read: a run that started
    (and here even ended) in between, its every event lost by the hub, still reaches the feed, once each."""
    from django.contrib.auth import get_user_model

    lost_publishes.update(range(1000))
    user = await database_sync_to_async(get_user_model().objects.create_user)(username="carol")
    subscription = user_subscribe(user.pk)
    execution, persisted = await chat_run(user, "hello there")  # before anything reads the feed
    feed = user_feed(user.pk, subscription=subscription, poll_s=0.1)
    try:
        got = await feed_until(feed, lambda got: any(e["event"] == "workflow_completed" for e in got))
        got += await more(feed, 0.5)
    finally:
        await feed.aclose()

    assert persisted_of(got, execution) == persisted
