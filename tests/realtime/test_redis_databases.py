"""Two deployments on one Redis, each on a database of its own (REDIS_URL redis://host/1 and /2), as the settings
configure channels-redis's pub/sub layer for them: neither hears the other's events (Redis's pub/sub spans its
numbered databases; the channels carry the database number), while two processes of one deployment do."""
import asyncio

from channels_redis.pubsub import RedisPubSubChannelLayer

from core.env import redis_channel_prefix


def layer(url: str) -> RedisPubSubChannelLayer:
    return RedisPubSubChannelLayer(hosts=[url], prefix=redis_channel_prefix(url))


async def heard(listener: RedisPubSubChannelLayer, channel: str, timeout: float) -> list[dict]:
    try:
        async with asyncio.timeout(timeout):
            return [await listener.receive(channel)]
    except TimeoutError:
        return []


async def test_deployments_on_their_own_redis_databases_never_hear_each_others_events(private_redis):
    base = private_redis.url.rsplit("/", 1)[0]
    assert redis_channel_prefix(f"{base}/0") == redis_channel_prefix(base) == "asgi"  # channels-redis's own
    one, one_elsewhere, two = layer(f"{base}/1"), layer(f"{base}/1"), layer(f"{base}/2")
    try:
        channel = await one.new_channel()
        await one.group_add("user-7", channel)

        await two.group_send("user-7", {"type": "event", "seq": 1})  # the other deployment's user 7
        assert await heard(one, channel, 0.5) == []

        await one_elsewhere.group_send("user-7", {"type": "event", "seq": 2})  # another process of its own
        assert await heard(one, channel, 5) == [{"type": "event", "seq": 2}]
    finally:
        for each in (one, one_elsewhere, two):
            await each.flush()
