"""The run throttle's cell (core/api/throttling.py): counted in one round trip on Redis (a script), it
answers exactly as the same algorithm over a process-local cache, for bursts, refusals and refills."""
import os
import uuid

import pytest

from core.api.throttling import LocalRunThrottle, RunThrottle


def _answers(throttle, key: str) -> list[float]:
    """A rate of 3 per 60 s: a burst of 4 at t=1000 (3 let through, then a refusal), a refusal 10 s later, one let
    through once its 20 s have come, and one after a long pause."""
    times = [1000.0, 1000.0, 1000.0, 1000.0, 1010.0, 1020.0, 1020.5, 2000.0]
    return [round(throttle.take(key, now=now, interval=20.0, duration=60.0), 3) for now in times]


def test_the_local_cell_lets_a_burst_through_then_one_per_interval():
    assert _answers(LocalRunThrottle(), f"t-{uuid.uuid4()}") == [
        -40.0, -20.0, 0.0, 20.0, 10.0, 0.0, 19.5, -40.0]


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (make test's second phase)")
def test_the_shared_cell_on_redis_answers_as_the_local_one(settings):
    settings.REDIS_URL = os.environ["REDIS_URL"]
    key = f"t-{uuid.uuid4()}"
    assert _answers(RunThrottle(), key) == _answers(LocalRunThrottle(), key)
