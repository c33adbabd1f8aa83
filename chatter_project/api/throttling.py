"""The run throttle (SPEC §7, scope "runs"): DRF's scoped rate throttle over the shared cache (Redis when
REDIS_URL is set), and, while that cache cannot be reached, a process-local limit of the same rate, so a Redis
outage never stops a chat turn or a run. An outage is logged once when it begins and once when it ends, and
/api/v1/health/ reports it (chatter_project.health)."""
from __future__ import annotations

import logging
import threading
import time

import redis
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger(__name__)


class CacheOutage:
    """Whether the shared cache failed the last time a throttle used it. During an outage the cache is tried
    again at most every RETRY_S (one request then pays for a connection attempt), not by every request."""

    RETRY_S = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None  # time.time() of the first failure, None while the cache answers
        self._error = ""
        self._next_try = 0.0

    def should_try(self) -> bool:
        with self._lock:
            if self._since is None:
                return True
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + self.RETRY_S
            return True

    def failed(self, exc: Exception) -> None:
        with self._lock:
            self._error = f"{type(exc).__name__}: {exc}"[:300]
            self._next_try = time.monotonic() + self.RETRY_S
            if self._since is not None:
                return
            self._since = time.time()
        logger.warning("the shared cache (Redis) is unreachable (%s): run throttles use a process-local limit "
                       "until it is back", self._error)

    def recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return
            lasted = time.time() - self._since
            self._since, self._error = None, ""
        logger.warning("the shared cache (Redis) is back after %.0f s: run throttles are shared again", lasted)

    def state(self) -> dict | None:
        """None while the cache answers; else since when (epoch seconds) and the last error."""
        with self._lock:
            return None if self._since is None else {"since": self._since, "error": self._error}


cache_outage = CacheOutage()


class LocalRunThrottle(ScopedRateThrottle):
    """The same scope and rate, counted in this process only (LocMemCache is process-local and thread-safe)."""

    cache = LocMemCache("chatter-run-throttle", {"OPTIONS": {"MAX_ENTRIES": 10_000}})


class RunThrottle(ScopedRateThrottle):
    """DRF's ScopedRateThrottle; when the shared cache raises, the request is counted by LocalRunThrottle."""

    fallback: LocalRunThrottle | None = None

    def allow_request(self, request, view) -> bool:
        if cache_outage.should_try():
            try:
                allowed = super().allow_request(request, view)
            except redis.RedisError as exc:
                cache_outage.failed(exc)
            else:
                cache_outage.recovered()
                return allowed
        self.fallback = LocalRunThrottle()
        return self.fallback.allow_request(request, view)

    def wait(self) -> float | None:
        return self.fallback.wait() if self.fallback is not None else super().wait()
