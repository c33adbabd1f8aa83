"""The hub (workflows/hub.py) on Channels' layer: what a process publishes reaches every subscriber of the run's and
of the owner's topic, here at once and in another process through the layer, in order, however many events one
hand-off carries; a process receives only the topics its readers watch."""
import asyncio
import os
import sys
import threading

import pytest

from tests import launcher
from workflows.hub import Hub, execution_topic, user_topic

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")


def envelope(seq, event="token", execution_id="b5-run"):
    return {"event": event, "execution_id": execution_id, "seq": seq, "ts": "2026-11-21T00:00:00.000Z",
            "data": {"text": f"word{seq} "}}


async def received(subscription, count: int) -> list[dict]:
    got: list[dict] = []
    async with asyncio.timeout(5):
        while len(got) < count:
            got += await subscription.get(1.0)
    return got


@pytest.fixture
def hubs():
    """Hubs as separate processes have them: each its own bus thread, event loop and layer connections."""
    made: list[Hub] = []

    def make() -> Hub:
        made.append(Hub())
        return made[-1]

    yield make
    for hub in made:
        hub.stop()


async def test_every_subscriber_here_and_in_another_process_gets_every_event_in_order(hubs):
    publisher, elsewhere = hubs(), hubs()
    here_run = publisher.subscribe([execution_topic("b5-run")])
    there_run, there_user = elsewhere.subscribe([execution_topic("b5-run")]), elsewhere.subscribe([user_topic(7)])
    for subscription in (there_run, there_user):
        await subscription.ready()
        assert subscription.listening.result() is True  # the process's channel is in the topic's group

    publisher.publish([envelope(seq) for seq in range(1, 41)], owner_id=7)  # one hand-off, many events
    for seq in range(41, 61):  # a hand-off each, as token deltas are
        publisher.publish([envelope(seq)], owner_id=7)

    for subscription in (here_run, there_run, there_user):
        assert [e["seq"] for e in await received(subscription, 60)] == list(range(1, 61))
    assert await here_run.get(0.3) == []  # its own events do not come back to the publisher through the layer


async def test_a_runs_topic_ends_with_its_terminal_event(hubs):
    hub = hubs()
    subscription = hub.subscribe([execution_topic("b5-run")])
    hub.publish([envelope(1, "node_started"), envelope(2, "workflow_completed")], owner_id=7)
    assert [e["seq"] for e in await received(subscription, 2)] == [1, 2]
    hub.publish([envelope(3, "token")], owner_id=7)  # nothing follows a terminal event on the run's topic
    assert await subscription.get(0.3) == []


async def test_a_process_receives_only_the_topics_its_readers_watch(hubs):
    publisher, elsewhere = hubs(), hubs()
    watched = elsewhere.subscribe([execution_topic("b5-run")])
    await watched.ready()
    other = elsewhere.subscribe([execution_topic("other-run")])
    await other.ready()
    other.close()  # its last reader left: the process leaves the topic's group
    assert elsewhere.flush(5)
    heard: list[dict] = []
    original = elsewhere.deliver
    elsewhere.deliver = lambda by_topic: (heard.append(by_topic), original(by_topic))
    publisher.publish([envelope(1, execution_id="other-run")], owner_id=8)  # nobody there watches these
    publisher.publish([envelope(1)], owner_id=8)
    assert [e["seq"] for e in await received(watched, 1)] == [1]
    assert [list(by_topic) for by_topic in heard] == [[execution_topic("b5-run")]]


async def test_events_of_a_run_not_yet_watchable_go_through_the_layer_on_its_owners_topic_only(hubs):
    """A run whose row the events' own write inserts (a gateway call written whole): no other process can listen
    to its topic yet, so only its owner's goes through the layer; here both are delivered."""
    publisher, elsewhere = hubs(), hubs()
    here_run = publisher.subscribe([execution_topic("b5-run")])
    there_run, there_user = elsewhere.subscribe([execution_topic("b5-run")]), elsewhere.subscribe([user_topic(7)])
    for subscription in (there_run, there_user):
        await subscription.ready()
    heard: list[dict] = []
    original = elsewhere.deliver
    elsewhere.deliver = lambda by_topic: (heard.append(by_topic), original(by_topic))
    publisher.publish([envelope(1), envelope(2, "workflow_completed")], owner_id=7, watchable=False)
    assert [e["seq"] for e in await received(here_run, 2)] == [1, 2]
    assert [e["seq"] for e in await received(there_user, 2)] == [1, 2]
    assert await there_run.get(0.3) == []
    assert [list(by_topic) for by_topic in heard] == [[user_topic(7)]]


async def test_a_process_that_publishes_and_exits_at_once_still_sends_everything(hubs):
    """Publishing hands the events to the bus thread; what is still queued when a process exits (a command's last
    events) is sent before it goes."""
    watcher = hubs()
    watched = watcher.subscribe([execution_topic("exiting-run")])
    await watched.ready()
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'chatter_project.settings'); "
        "django.setup(); from workflows.hub import hub; "
        "[hub.publish([{'event': 'node_started', 'execution_id': 'exiting-run', 'seq': seq, 'ts': '', "
        "'data': {}}], owner_id=11) for seq in range(1, 201)]"
    )
    done = launcher.run([sys.executable, "-c", script], cwd=os.getcwd(), env={**os.environ, "DEBUG": "1"}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [e["seq"] for e in await received(watched, 200)] == list(range(1, 201))


def test_a_stopped_hub_ends_its_bus_thread_once_what_it_was_handed_is_sent():
    def buses() -> set:
        return {t for t in threading.enumerate() if t.name == "chatter-events-bus"}

    before = buses()
    publisher = Hub()
    publisher.publish([envelope(1, "node_started")], owner_id=12)
    (mine,) = buses() - before
    publisher.stop()
    assert publisher.flush(0.1)  # nothing is left to send
    mine.join(timeout=5)
    assert not mine.is_alive()


async def test_once_redis_is_back_the_layer_carries_events_between_processes_again(hubs, private_redis, settings):
    """Redis restarted (its subscriptions gone): the processes' channels are in their groups again and live
    events flow without anyone subscribing anew."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                                           "CONFIG": {"hosts": [private_redis.url]}}}
    publisher, elsewhere = hubs(), hubs()
    watched = elsewhere.subscribe([execution_topic("b5-run")])
    await watched.ready()
    assert watched.listening.result() is True
    publisher.publish([envelope(1)], owner_id=13)
    assert [e["seq"] for e in await received(watched, 1)] == [1]

    private_redis.kill()
    publisher.publish([envelope(2)], owner_id=13)  # lost: nobody can carry it (a feed reads persisted ones back)
    private_redis.start()

    got: list[dict] = []
    async with asyncio.timeout(20):
        seq = 3
        while not got:
            publisher.publish([envelope(seq)], owner_id=13)
            got = await watched.get(0.5)
            seq += 1
    assert got[0]["seq"] >= 3


def test_a_layer_too_slow_to_answer_is_logged_by_its_kind_without_a_traceback(monkeypatch, caplog):
    """A layer call past LAYER_TIMEOUT_S (Redis under load) is expected: one warning that says so, no traceback
    (a server's log with a traceback reads as a bug)."""
    from channels_redis.pubsub import RedisPubSubLoopLayer

    async def hung(self, group, message):
        await asyncio.sleep(5)

    monkeypatch.setattr(RedisPubSubLoopLayer, "group_send", hung)
    publisher = Hub()
    try:
        with caplog.at_level("WARNING", logger="workflows.hub"):
            publisher.publish([envelope(1, "node_started")], owner_id=12)
            assert publisher.flush(5)
        (record,) = [r for r in caplog.records if r.name == "workflows.hub"]
        assert "a call took longer than 0.5 s" in record.getMessage() and not record.exc_info
    finally:
        publisher.stop()
