"""Reproduction (found by B5 and B7): after a burst of concurrent requests a daphne process keeps one idle
PostgreSQL connection per request it served concurrently, for good (past CONN_MAX_AGE, until the process exits).

Django under ASGI runs each request's sync code in a thread of its own (asgiref's ThreadSensitiveContext per
request) and database connections are per thread; with CONN_MAX_AGE=60 (chatter_project/settings.py) a
connection is only closed by a later request *in the same thread*, which never comes. After B7's 200-turn burst
the two daphne processes held 98 + 94 idle connections three minutes later: PostgreSQL's max_connections (200)
was used up and every new request failed with "remaining connection slots are reserved".

    .venv/bin/python bench/repro_idle_connections_after_burst.py [--requests 40] [--wait 75]

One daphne process on PostgreSQL + Redis; `--requests` concurrent `GET /api/v1/conversations/` (a cheap
authenticated read: any request that touches the database will do), then it waits `--wait` s (past
CONN_MAX_AGE) and counts the idle connections daphne still holds. Exit status 1 when more than 5 remain.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BenchRun, api_token, log


def held_by_server(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                  "AND state = 'idle' AND pid <> pg_backend_pid()").fetchone()[0]


async def burst(base_url: str, token: str, n: int) -> list[int]:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=n + 5),
                                 headers={"Authorization": f"Token {token}"}) as client:
        responses = await asyncio.gather(*(client.get("/api/v1/conversations/") for _ in range(n)))
    return [r.status_code for r in responses]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--wait", type=float, default=75)
    args = parser.parse_args()
    with BenchRun("repro-idle") as run:
        services = run.services()
        url = services["DATABASE_URL"]
        database = run.database("postgres", DATABASE_URL=url, REDIS_URL=services["REDIS_URL"])
        server = run.daphne(database)
        token = api_token(server, database)
        before = held_by_server(url)
        statuses = asyncio.run(burst(server.base_url, token, args.requests))
        after = held_by_server(url)
        log(f"{args.requests} concurrent requests answered {sorted(set(statuses))}; waiting {args.wait:.0f} s")
        time.sleep(args.wait)
        later = held_by_server(url)
        print(f"idle PostgreSQL connections held by the one daphne process: before {before}, right after the burst "
              f"{after}, {args.wait:.0f} s later {later} (CONN_MAX_AGE is 60 s)")
        if later > 5:
            print("BUG REPRODUCED: the connections of finished requests stay open")
            return 1
        print("not reproduced")
        return 0


if __name__ == "__main__":
    sys.exit(main())
