"""B8's in-process view of one gateway call (`POST /v1/chat/completions` through Django's test client, the whole
request stack in this thread, to the project's OpenAI stub in a thread answering at once): its wall time, the SQL
statements it runs (listed, as Django logs them), and a cProfile of many calls: self time by area and our
functions by cumulative time (cProfile inflates Python-heavy code: read it for proportions).

    .venv/bin/python -m bench.b8_inprocess [--calls 300] [--sqlite]

PostgreSQL + Redis (scripts/services.sh) by default, as the servers of bench.b8_gateway run; `--sqlite` for a
quick look without them.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections import defaultdict

from bench import chatter_calls
from bench.b1_cprofile import area_of
from bench.b1_sql import sql_short
from bench.b5_loadgen import MESSAGE, OPENAI_MODEL
from bench.b8_stub import REPLY, USAGE
from bench.chatter_servers import USERNAME, chatter_database
from bench.processes import ROOT, BenchRun, log, run_main
from bench.services import start_services
from bench.stats import median, ms, percentile, table
from tests.openai_stub import OpenAIStub

BODY = json.dumps({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": MESSAGE}]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls timed, and profiled (default 300)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite, no Redis")
    args = parser.parse_args()
    with BenchRun("b8-inprocess") as run:
        stub = OpenAIStub(keep_alive=True, keep_requests=False).start()
        run.on_exit(stub.stop)
        stub.always(content=REPLY, usage=USAGE, model=OPENAI_MODEL)
        extra = {}
        if not args.sqlite:
            services = start_services(run)
            extra = {"DATABASE_URL": services.database_url, "REDIS_URL": services.redis_url}
        database = chatter_database(run, "postgres" if not args.sqlite else "sqlite", OPENAI_BASE_URL=stub.base_url,
                                    OPENAI_API_KEY="sk-bench-upstream", CHATTER_PROVIDER_MAX_RETRIES=0, **extra)
        chatter_calls.django_setup(database.env)
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        client = chatter_calls.gateway_client(chatter_calls.bench_user(USERNAME))

        def call() -> None:
            response = client.post(chatter_calls.GATEWAY_PATH, BODY, content_type="application/json")
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code} {response.content[:300]!r}")

        for _ in range(20):
            call()
        with CaptureQueriesContext(connection) as queries:
            call()
        statements = [q["sql"] for q in queries.captured_queries]
        log(f"timing {args.calls} calls")
        times = []
        for _ in range(args.calls):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.calls):
            call()
        profiler.disable()
        stats = pstats.Stats(profiler)

        print(f"\nB8 in process ({'SQLite' if args.sqlite else 'PostgreSQL + Redis'}): one gateway call, wall time "
              f"median {ms(median(times))}, p99 {ms(percentile(times, 99))} over {args.calls} calls (stub included)")
        print(f"\nStatements of one call ({len(statements)}, as Django logs them"
              f"{'' if args.sqlite else '; PostgreSQL: BEGIN/COMMIT not logged'}):")
        for sql in statements:
            print(f"  {sql_short(sql):40s} {sql[:150]}")

        areas: dict[str, float] = defaultdict(float)
        total = 0.0
        ours = []
        for (filename, line, funcname), (_, calls, tottime, cumtime, _) in stats.stats.items():
            areas[area_of(filename, funcname)] += tottime
            total += tottime
            if filename.startswith(str(ROOT)) and "/.venv/" not in filename:
                ours.append((f"{filename[len(str(ROOT)) + 1:]}:{line} {funcname}", calls, tottime, cumtime))
        n = args.calls
        print(f"\ncProfile: {n} calls, {ms(total / n)} profiled per call; self time by area (ms per call)")
        print(table([[area, ms(t / n), f"{t / total * 100:.0f}%"] for area, t in
                     sorted(areas.items(), key=lambda kv: -kv[1])[:24]], ["area", "self", "share"]))
        print("\ncProfile: our functions by cumulative time (ms per call)")
        print(table([[name, f"{calls / n:.1f}", ms(cum / n), ms(tot / n)] for name, calls, tot, cum in
                     sorted(ours, key=lambda r: -r[3])[:45]], ["function", "calls/call", "cumulative", "self"]))
    return 0


if __name__ == "__main__":
    run_main(main)
