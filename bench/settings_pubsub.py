"""An experiment for B3/B4 (`--layer pubsub`), never a deployment setting: the project's settings with
channels_redis's pub/sub layer in place of the list-based RedisChannelLayer the project configures, to see how
much of the figure is the layer's per-message Redis round trips."""
from chatter_project.settings import *
from chatter_project.settings import REDIS_URL

if not REDIS_URL:
    raise RuntimeError("bench.settings_pubsub needs REDIS_URL")
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}},
}
