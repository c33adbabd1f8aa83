"""The Redis cache's connection pool (chatter_project/cache.py): one per process and URL, whichever cache client
asks (Django makes a client per request under ASGI)."""
import asyncio
import os

import pytest
from django.core.cache import caches

from chatter_project.cache import SharedConnectionPool


def test_the_same_url_gets_the_same_pool():
    first = SharedConnectionPool.from_url("redis://127.0.0.1:1/0")
    assert SharedConnectionPool.from_url("redis://127.0.0.1:1/0") is first
    assert SharedConnectionPool.from_url("redis://127.0.0.1:1/1") is not first


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
async def test_cache_clients_of_different_requests_share_one_pool_and_its_connection():
    async def in_a_request(key):  # each task has a context of its own, as each ASGI request does
        cache = caches["default"]
        await cache.aset(key, "value")
        return cache, cache._cache._get_connection_pool(write=True)

    (first, first_pool), (second, second_pool) = await asyncio.gather(in_a_request("b5-cache-a"),
                                                                       in_a_request("b5-cache-b"))
    assert first is not second and first_pool is second_pool
    assert caches["default"].get_many(["b5-cache-a", "b5-cache-b"]) == {"b5-cache-a": "value",
                                                                          "b5-cache-b": "value"}
