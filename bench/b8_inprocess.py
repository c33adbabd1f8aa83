"""B8's in-process view of one gateway call (`POST /v1/chat/completions` through Django's test client, the whole
request stack in this thread, to the project's OpenAI stub in a thread answering at once), or with `--chat` of B5's
turn (`POST /api/v1/chat/`, the local model): its wall time, the SQL statements it runs (listed, as Django logs
them), and cProfiles of many calls, by wall time and by the calling thread's CPU: self time by area and our
functions by cumulative time (cProfile inflates Python-heavy code: read it for proportions).

    .venv/bin/python -m bench.b8_inprocess [--calls 300] [--sqlite] [--chat] [--dump cpu.pstats]

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
CHAT_PATH, CHAT_BODY = "/api/v1/chat/", json.dumps({"message": MESSAGE})


def _profiled(call, calls: int, timer) -> pstats.Stats:
    profiler = cProfile.Profile(timer)
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    return pstats.Stats(profiler)


def _ours(stats: pstats.Stats) -> dict[str, tuple[int, float, float]]:
    """Our functions (the project's files): (calls, self, cumulative)."""
    return {f"{filename[len(str(ROOT)) + 1:]}:{line} {funcname}": (calls, tottime, cumtime)
            for (filename, line, funcname), (_, calls, tottime, cumtime, _) in stats.stats.items()
            if filename.startswith(str(ROOT)) and "/.venv/" not in filename}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls timed, and profiled (default 300)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite, no Redis")
    parser.add_argument("--chat", action="store_true", help="B5's chat turn (POST /api/v1/chat/) instead of a "
                        "gateway call")
    parser.add_argument("--dump", help="write the CPU profile here (pstats), to read further")
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

        user = chatter_calls.bench_user(USERNAME)
        if args.chat:
            from django.test import Client
            client = Client(HTTP_AUTHORIZATION=f"Token {chatter_calls.api_token_key(user)}", HTTP_HOST="127.0.0.1")
            path, body, status = CHAT_PATH, CHAT_BODY, 201
        else:
            client = chatter_calls.gateway_client(user)
            path, body, status = chatter_calls.GATEWAY_PATH, BODY, 200

        def call() -> None:
            response = client.post(path, body, content_type="application/json")
            if response.status_code != status:
                raise RuntimeError(f"{response.status_code} {response.content[:300]!r}")

        for _ in range(20):
            call()
        with CaptureQueriesContext(connection) as queries:
            call()
        statements = [q["sql"] for q in queries.captured_queries]
        log(f"timing {args.calls} calls")
        times, cpu_times = [], []
        for _ in range(args.calls):
            started, cpu_started = time.perf_counter(), time.thread_time()
            call()
            times.append(time.perf_counter() - started)
            cpu_times.append(time.thread_time() - cpu_started)
        wall = _profiled(call, args.calls, time.perf_counter)
        cpu = _profiled(call, args.calls, time.thread_time)
        if args.dump:
            cpu.dump_stats(args.dump)

        what = "one chat turn (the local model)" if args.chat else "one gateway call (the stub's answer included)"
        print(f"\nB8 in process ({'SQLite' if args.sqlite else 'PostgreSQL + Redis'}): {what}, wall time "
              f"median {ms(median(times))}, p99 {ms(percentile(times, 99))} over {args.calls} calls; CPU of the "
              f"calling thread median {ms(median(cpu_times))}, p99 {ms(percentile(cpu_times, 99))}")
        print(f"\nStatements of one call ({sum(not sql.startswith(('BEGIN', 'COMMIT')) for sql in statements)}, "
              f"in {sum(sql.startswith('BEGIN') for sql in statements)} explicit transactions; as Django logs them):")
        for sql in statements:
            print(f"  {sql_short(sql):40s} {sql[:150]}")
        n = args.calls
        for label, stats in (("wall time", wall), ("CPU of the calling thread (time.thread_time)", cpu)):
            areas: dict[str, float] = defaultdict(float)
            for (filename, _, funcname), (_, _, tottime, _, _) in stats.stats.items():
                areas[area_of(filename, funcname)] += tottime
            total = sum(areas.values())
            print(f"\ncProfile, {label}: {n} calls, {ms(total / n)} profiled per call; self time by area (ms per call)")
            print(table([[area, ms(t / n), f"{t / total * 100:.0f}%"] for area, t in
                         sorted(areas.items(), key=lambda kv: -kv[1])[:20]], ["area", "self", "share"]))
        ours_wall, ours_cpu = _ours(wall), _ours(cpu)
        print("\ncProfile: our functions by cumulative time, wall and CPU of the calling thread (ms per call)")
        print(table([[name, f"{calls / n:.1f}", ms(cum / n), ms(ours_cpu.get(name, (0, 0, 0))[2] / n),
                      ms(ours_cpu.get(name, (0, 0, 0))[1] / n)]
                     for name, (calls, _, cum) in sorted(ours_wall.items(), key=lambda kv: -kv[1][2])[:50]],
                    ["function", "calls/call", "wall cumulative", "CPU cumulative", "CPU self"]))
    return 0


if __name__ == "__main__":
    run_main(main)
