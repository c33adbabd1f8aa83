"""Redis cache plumbing (CACHES; REDIS_URL in docs/operations/configuration.md#settings)."""
from __future__ import annotations

import logging
import threading
import uuid

import redis

logger = logging.getLogger(__name__)


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


class HotReads:
    """What every gateway call reads and hardly ever changes (a key and its user, the key's limits, the prices),
    kept per process for as long as one shared version stays the same. Any change to those rows names a new version
    (`changed`, after its transaction commits: reading the old rows under the new version would keep them), so every
    process reads afresh at its next call: a revoked key is refused, a lowered limit holds, from the next call on.
    Each read costs a cache read (the version, one round trip to Redis) instead of a statement.

    Kept only where the cache is shared by every process (Redis): with a process-local cache (locmem, the
    default without REDIS_URL) another process's change could not reach this one, so each call reads the rows."""

    VERSION_KEY = "hot-reads:version"
    MAX_ENTRIES = 10_000  # past it, the process's memo starts over (keys are many; no bound would be a leak)

    def __init__(self):
        self._version: str | None = None
        self._values: dict = {}
        self._lock = threading.Lock()

    @staticmethod
    def shared() -> bool:
        """Whether the memo is kept: the cache is one every process shares."""
        from django.conf import settings

        backend = settings.CACHES["default"]["BACKEND"]
        return not backend.endswith(("LocMemCache", "DummyCache"))

    def get(self, item, load):
        """`item`'s value (any hashable name of it), from this process's memo while the version holds, else
        `load()`; a value of None is not kept (an unknown key would otherwise fill the memo)."""
        if not self.shared():
            return load()
        from django.core.cache import cache

        try:
            version = cache.get(self.VERSION_KEY)
            if version is None:  # never set, or evicted: a version of its own, which no memo holds
                cache.add(self.VERSION_KEY, uuid.uuid4().hex, timeout=None)
                version = cache.get(self.VERSION_KEY)
        except Exception:  # noqa: BLE001 - the cache unreachable: read the rows, as without one
            logger.warning("hot reads: the shared cache failed; reading from the database", exc_info=True)
            return load()
        with self._lock:
            if version != self._version or len(self._values) >= self.MAX_ENTRIES:
                self._version, self._values = version, {}
            if item in self._values:
                return self._values[item]
        value = load()
        if value is not None:
            with self._lock:
                if self._version == version:
                    self._values[item] = value
        return value

    def changed(self, **kwargs) -> None:
        """A row the memo may hold changed (a signal receiver, or a caller that wrote without signals): this
        process's memo goes at once (its own transaction reads its change), every process's once the change
        commits (a new version: at once outside a transaction)."""
        from django.db import transaction

        self._forget()
        transaction.on_commit(self.renew)

    def renew(self) -> None:
        """A new version, now: every process reads afresh at its next call."""
        self._forget()
        if not self.shared():
            return
        from django.core.cache import cache

        try:
            cache.set(self.VERSION_KEY, uuid.uuid4().hex, timeout=None)
        except Exception:  # noqa: BLE001
            logger.error("hot reads: a change could not be announced through the shared cache", exc_info=True)

    def _forget(self) -> None:
        with self._lock:
            self._version, self._values = None, {}


hot_reads = HotReads()
