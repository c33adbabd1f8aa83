"""A websocket feed opens once events other processes publish reach it: a client that sees its socket open gets
every live event (a token, which no log holds) published elsewhere from then on, even when the server's channel
joins its groups slowly (a loaded machine)."""
import asyncio
import os

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.pubsub import RedisPubSubLoopLayer

from chatter_project.asgi import application
from tests.realtime.test_websockets import close_db_connections, token_for  # noqa: F401 - a fixture too
from workflows.hub import MESSAGE_TYPE, user_topic

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)"),
]


async def test_a_token_published_elsewhere_just_after_the_socket_opened_reaches_it(alice, monkeypatch,
                                                                                   close_db_connections):
    layer = get_channel_layer()
    group_add = RedisPubSubLoopLayer.group_add  # (the layer's own, one per event loop)

    async def slow_join(self, group, channel):  # the server's channel joins the user's group 0.3 s late (a
        await asyncio.sleep(0.3)                 # layer that answers slowly, not one that fails: LAYER_TIMEOUT_S)
        return await group_add(self, group, channel)

    monkeypatch.setattr(RedisPubSubLoopLayer, "group_add", slow_join)
    token = await token_for(alice)
    communicator = WebsocketCommunicator(application, f"/ws/events/?token={token}",
                                         headers=[(b"origin", b"http://127.0.0.1")])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    try:
        # another process publishes a token of one of alice's runs on her topic, the moment her socket is open
        envelope = {"execution_id": "00000000-0000-0000-0000-000000000001", "event": "token", "seq": None,
                    "ts": "2026-11-28T12:00:00.000Z", "data": {"node_id": "model", "text": "84"}}
        await layer.group_send(user_topic(alice.pk), {"type": MESSAGE_TYPE, "origin": "another process",
                                                      "topic": user_topic(alice.pk), "events": [envelope]})

        assert await communicator.receive_json_from(timeout=5) == envelope
    finally:
        await communicator.disconnect()
