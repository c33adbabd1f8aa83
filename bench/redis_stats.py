"""Redis commands executed while a benchmark measured (INFO commandstats), and Redis's round trip."""
from __future__ import annotations

import time

from bench.stats import median


class RedisCommands:
    """Redis commands executed between start() and stop(), by command."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)

    def _counts(self) -> dict[str, int]:
        return {name.removeprefix("cmdstat_"): stats["calls"]
                for name, stats in self.client.info("commandstats").items()}

    def start(self) -> None:
        self.before = self._counts()

    def stop(self) -> dict[str, int]:
        after = self._counts()
        delta = {name: calls - self.before.get(name, 0) for name, calls in after.items()}
        return {name: n for name, n in sorted(delta.items(), key=lambda kv: -kv[1]) if n > 0 and name != "info"}

    def round_trip_ms(self, samples: int = 200) -> float:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            self.client.ping()
            times.append(time.perf_counter() - started)
        return median(times) * 1000


def format_commands(delta: dict[str, int], per: int, label: str) -> str:
    total = sum(delta.values())
    parts = ", ".join(f"{name} {n / per:.1f}" for name, n in list(delta.items())[:8])
    return f"Redis commands per {label}: {total / per:.1f} ({parts})"
