"""Redis killed under a running server: chat turns and runs go on (the run throttle counts in
the process meanwhile, at the same rate), the log says so once per outage, /api/v1/health/ says "degraded"
naming the cache, and once Redis is back the throttle is shared again.

A private redis-server on a free port (tests.fixtures_server.private_redis) backs one daphne process, so killing it
touches nothing else."""
import shutil
import time

import httpx
import pytest

from core.api.throttling import CacheOutage
from tests.factories import ApiTokenFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (make test installs it)"),
]

OUTAGE_LOGGED = "run throttles use a process-local limit"
RECOVERY_LOGGED = "run throttles are shared again"


def test_runs_go_on_throttled_per_process_while_redis_is_down_and_health_says_so(alice, daphne_server,
                                                                                  private_redis):
    server = daphne_server(REDIS_URL=private_redis.url, CHATTER_RUN_THROTTLE="4/min")
    headers = {"Authorization": f"Token {ApiTokenFactory(user=alice).key}"}

    def turn(text: str) -> httpx.Response:
        return httpx.post(f"{server.base_url}/api/v1/chat/", headers=headers, json={"message": text}, timeout=30)

    def health() -> httpx.Response:
        return httpx.get(f"{server.base_url}/api/v1/health/", timeout=30)

    assert turn("before the outage").status_code == 201
    cache = health().json()["checks"]["cache"]
    assert cache["ok"] is True and cache["backend"] == "redis"

    private_redis.kill()

    # Every turn of the per-process allowance is answered: none is a 500.
    for number in range(4):
        response = turn(f"during the outage {number}")
        assert response.status_code == 201, response.text
        assert response.json()["execution"]["status"] == "completed"
    run = httpx.post(f"{server.base_url}/api/v1/executions/", headers=headers, timeout=30,
                     json={"template": "summarize", "input": {"message": "text"}, "mode": "sync"})
    assert run.status_code == 429 and run.json()["error"]["code"] == "throttled"  # the local limit holds

    response = health()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["ok"] is False
    assert "run throttles count per process" in body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert server.log.read_text().count(OUTAGE_LOGGED) == 1  # once per outage, not per request

    private_redis.start()  # back, empty: the shared count starts again
    time.sleep(CacheOutage.RETRY_S + 0.5)
    assert turn("after the outage").status_code == 201
    assert health().json()["checks"]["cache"]["ok"] is True
    log = server.log.read_text()
    assert log.count(RECOVERY_LOGGED) == 1 and log.count(OUTAGE_LOGGED) == 1
