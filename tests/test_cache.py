"""The Redis cache's connection pool (core/cache.py): one per process and URL, whichever cache client
asks (Django makes a client per request under ASGI)."""
import os

import pytest
from django.core.cache import caches

from core.cache import SharedConnectionPool


def test_the_same_url_gets_the_same_pool():
    first = SharedConnectionPool.from_url("redis://127.0.0.1:1/0")
    assert SharedConnectionPool.from_url("redis://127.0.0.1:1/0") is first
    assert SharedConnectionPool.from_url("redis://127.0.0.1:1/1") is not first


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_cache_clients_of_different_requests_share_one_pool():
    first, second = caches.create_connection("default"), caches.create_connection("default")  # as two requests
    first.set("b5-cache", "value")
    assert second.get("b5-cache") == "value"
    assert first._cache.get_client(write=True).connection_pool is second._cache.get_client().connection_pool
