"""The Redis connection pool of CACHES (settings, with REDIS_URL) and the run throttle's script. A module of its own:
redis-py (with the observability modules it imports) is loaded only by a process that uses Redis, not at every
start (core/cache.py is imported by every app)."""
from __future__ import annotations

import threading

import redis


class SharedConnectionPool(redis.ConnectionPool):
    """One Redis connection pool per process and URL for Django's RedisCache (and the run throttle's script).

    Django makes a cache client, and with it a connection pool, per request under ASGI (caches are context-local),
    so every request that touched the cache (the run throttle does, twice) connected to Redis anew. redis-py's pool
    is thread-safe, and a forked child resets the pool it inherits."""

    _shared: dict[tuple, "SharedConnectionPool"] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "SharedConnectionPool":
        key = (url, tuple(sorted(kwargs.items())))
        with cls._lock:
            if key not in cls._shared:
                cls._shared[key] = super().from_url(url, **kwargs)
            return cls._shared[key]
