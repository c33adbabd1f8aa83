"""The run throttle (scope "runs", docs/api/rest.md) of every surface that starts runs: DRF's scoped rate throttle (its
scope, rate setting and keys) over the shared cache (Redis when REDIS_URL is set), and, while that cache cannot be
reached, a process-local limit of the same rate, so a Redis outage never stops a chat turn or a run. On Redis a
request is counted in one round trip (a script). An outage is logged once when it begins and once when it ends,
and /api/v1/health/ reports it (chatter_project.health).

Each user's count is one number, not DRF's list of every request's time (read and written whole by every
request, so its cost grew with the rate): the generic cell rate algorithm. A rate of N per period lets N runs
through at once, then one every period/N; the number kept is when the user's allowance is next full."""
from __future__ import annotations

import functools
import logging
import threading
import time

from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
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


class CellRateThrottle(ScopedRateThrottle):
    """DRF's ScopedRateThrottle with one stored number per key (see the module's docstring)."""

    def allow_request(self, request, view) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        return self.allow_key(self.get_cache_key(request, view))

    def get_rate(self) -> str:
        """The scope's rate as the settings say now (DRF's own copy of them is taken when it is imported)."""
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(
                f"no rate in DEFAULT_THROTTLE_RATES for the throttle scope {self.scope!r}") from None

    def allow_key(self, key: str | None) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = key
        if self.rate is None or self.key is None:
            return True
        self.wait_s = self.take(self.key, now=self.timer(), interval=self.duration / self.num_requests,
                                duration=self.duration)
        return self.wait_s <= 0

    def take(self, key: str, *, now: float, interval: float, duration: float) -> float:
        """Take one run from the key's allowance; returns how long until it would have had one (> 0: refused, and
        nothing was taken)."""
        full_at = max(self.cache.get(key) or now, now) + interval  # when the allowance is full again
        wait = full_at - now - duration
        if wait <= 0:
            self.cache.set(key, full_at, duration)
        return wait

    def wait(self) -> float | None:
        return max(self.wait_s, 0.0)


class LocalRunThrottle(CellRateThrottle):
    """The same scope and rate, counted in this process only (LocMemCache is process-local and thread-safe)."""

    cache = LocMemCache("chatter-run-throttle", {"OPTIONS": {"MAX_ENTRIES": 10_000}})


# take() in one round trip to Redis: read the cell, and keep it only when the run is let through.
_TAKE_LUA = """
local now, interval, duration = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local full_at = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) + interval
local wait = full_at - now - duration
if wait <= 0 then
  redis.call('SET', KEYS[1], string.format('%.6f', full_at), 'PX', math.ceil(duration * 1000))
end
return string.format('%.6f', wait)
"""


def cache_errors() -> tuple[type[Exception], ...]:
    """What the shared cache raises when it cannot be reached: redis-py's errors with REDIS_URL (redis-py is
    imported only then), none from the process's own cache."""
    if not settings.REDIS_URL:
        return ()
    import redis

    return (redis.RedisError,)


@functools.lru_cache(maxsize=8)
def _take_script(url: str):
    """The script, registered once per process and URL (EVALSHA: one round trip), on the process's one pool for
    the URL (core.redis_pool)."""
    import redis

    from core.redis_pool import SharedConnectionPool

    client = redis.Redis(connection_pool=SharedConnectionPool.from_url(url, socket_connect_timeout=1,
                                                                       socket_timeout=1))
    return client.register_script(_TAKE_LUA)


class RunThrottle(CellRateThrottle):
    """Counted in the shared cache (Redis; the default cache without REDIS_URL); when it raises, the request is
    counted by LocalRunThrottle."""

    fallback: LocalRunThrottle | None = None

    def take(self, key: str, *, now: float, interval: float, duration: float) -> float:
        if not settings.REDIS_URL:
            return super().take(key, now=now, interval=interval, duration=duration)
        return float(_take_script(settings.REDIS_URL)(keys=[f"chatter:throttle:{key}"],
                                                      args=[repr(now), repr(interval), repr(duration)]))

    def allow_key(self, key: str | None) -> bool:
        if cache_outage.should_try():
            try:
                allowed = super().allow_key(key)
            except cache_errors() as exc:
                cache_outage.failed(exc)
            else:
                cache_outage.recovered()
                return allowed
        self.fallback = LocalRunThrottle()
        self.fallback.scope = self.scope
        return self.fallback.allow_key(key)

    def wait(self) -> float | None:
        return self.fallback.wait() if self.fallback is not None else super().wait()


RUNS = "runs"  # the run throttle's scope (a view's throttle_scope): its rate is CHATTER_RUN_THROTTLE
