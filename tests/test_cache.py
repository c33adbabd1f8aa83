"""The Redis cache's connection pool (core/redis_pool.py): one per process and URL, whichever cache client
asks (Django makes a client per request under ASGI)."""
import os
import uuid

import pytest
import redis
from django.core.cache import caches

from core.redis_pool import SharedConnectionPool


def test_the_same_url_gets_the_same_pool():
    first = SharedConnectionPool.from_url("redis://127.0.0.1:1/0")
    assert SharedConnectionPool.from_url("redis://127.0.0.1:1/0") is first
    assert SharedConnectionPool.from_url("redis://127.0.0.1:1/1") is not first


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_cache_clients_of_different_requests_share_one_pool(settings):
    # Every connection of this test's cache carries a name of its own: Redis lists them, whichever process looks.
    name = f"cache-test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {"default": {**settings.CACHES["default"], "OPTIONS": {
        **settings.CACHES["default"]["OPTIONS"], "client_name": name}}}
    first, second = caches.create_connection("default"), caches.create_connection("default")  # as two requests
    first.set("b5-cache", "value")
    assert second.get("b5-cache") == "value"

    server = redis.Redis.from_url(settings.REDIS_URL)
    assert [client["name"] for client in server.client_list()].count(name) == 1  # one pool, one connection
    server.close()
