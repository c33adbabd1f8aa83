"""A comparison for B3/B4 (`--layer list`), never a deployment setting: the project's settings with
channels_redis's list-based RedisChannelLayer, to show what the per-message Redis round trips of that layer
cost. (A Django settings module, so it imports the project's settings by name, as any settings module does.)"""
from chatter_project.settings import *  # noqa: F403
from chatter_project.settings import REDIS_URL

if not REDIS_URL:
    raise RuntimeError("bench.settings_list_layer needs REDIS_URL")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 5000, "expiry": 30},
    },
}
