"""The broadcaster (workflows/realtime.py) on the Redis layer: what sync code broadcasts reaches every group's
subscribers in order, however many messages one publishing round trip carries."""
import asyncio
import os

import pytest
from channels.layers import get_channel_layer

from workflows.realtime import (
    MESSAGE_TYPE,
    broadcast,
    broadcast_many,
    execution_group,
    user_group,
)

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")


def envelope(seq):
    return {"event": "token", "execution_id": "b5-run", "seq": seq, "ts": "2026-11-21T00:00:00.000Z",
            "data": {"text": f"word{seq} "}}


async def test_every_subscriber_of_every_group_gets_every_message_in_order():
    layer = get_channel_layer()
    run_channel, user_channel = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(execution_group("b5-run"), run_channel)
    await layer.group_add(user_group(7), user_channel)
    await asyncio.sleep(0.2)  # the subscriptions are in place

    broadcast_many([envelope(seq) for seq in range(1, 41)], owner_id=7)  # one hand-off, many messages
    for seq in range(41, 61):  # a hand-off each, as token deltas are
        broadcast(envelope(seq), owner_id=7)

    for channel in (run_channel, user_channel):
        received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(60)]
        assert {message["type"] for message in received} == {MESSAGE_TYPE}
        assert [message["event"]["seq"] for message in received] == list(range(1, 61))
