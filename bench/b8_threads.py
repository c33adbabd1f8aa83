"""B8's CPU per call by thread: gateway calls (`POST /v1/chat/completions`, not streamed) through the ASGI application
a server runs (chatter_project.asgi), called in this process with --concurrency calls at once, to the B8 stub
upstream in a process of its own, on PostgreSQL + Redis as bench.b8_gateway's servers run. The process's CPU per call,
and each of its threads' (request threads together, the event loop, the gateway's upstream loop, the events bus,
the audit chainer) from /proc, without a profiler. `--baseline <checkout>` runs the same in another checkout
(each variant a process of its own, alternated --rounds times), for an A/B of one change.

    .venv/bin/python -m bench.b8_threads [--calls 2000] [--concurrency 8] [--rounds 3] [--baseline <checkout>]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench.processes import PYTHON, ROOT, BenchRun, log, run_main

_TICKS = os.sysconf("SC_CLK_TCK")


def _threads_cpu() -> Counter:
    """CPU seconds so far of this process's live threads, by name (request_0, request_1... as `request`)."""
    seconds: Counter = Counter()
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[re.sub(r"[_-]?\d+$", "", thread.name)] += (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds


def measure(calls: int, concurrency: int) -> dict:
    """In this process (the checkout it runs from): the figures of `calls` calls, as a dict."""
    from bench import chatter_calls
    from bench.b5_loadgen import MESSAGE, OPENAI_MODEL
    from bench.b8_gateway import start_stub
    from bench.b8_hops import _call
    from bench.chatter_servers import USERNAME, chatter_database
    from bench.services import start_services

    with BenchRun("b8-threads") as run:
        stub = start_stub(run)
        services = start_services(run)
        database = chatter_database(run, "postgres", OPENAI_BASE_URL=f"http://{stub.targets(first_only=True)}/v1",
                                    OPENAI_API_KEY="sk-bench-upstream", CHATTER_PROVIDER_MAX_RETRIES=0,
                                    DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                    CHATTER_MAX_CONCURRENT_RUNS=str(max(64, concurrency)))
        chatter_calls.django_setup(database.env)
        from chatter_project.asgi import application
        from keys.services import api_token_create

        key = api_token_create(user=chatter_calls.bench_user(USERNAME), name="b8", scopes=["gateway"])[1]
        body = json.dumps({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": MESSAGE}]}).encode()

        async def client(count: int) -> None:
            for _ in range(count):
                status, content = await _call(application, key, body)
                if status != 200:
                    raise RuntimeError(f"{status} {content[:300]!r}")

        async def calls_made() -> dict:
            await asyncio.gather(*[client(25) for _ in range(concurrency)])  # warm: connections, memo, threads
            before, cpu, wall = _threads_cpu(), time.process_time(), time.perf_counter()
            await asyncio.gather(*[client(calls // concurrency) for _ in range(concurrency)])
            await asyncio.sleep(0.5)  # the chainer's and the bus's last passes
            made = calls // concurrency * concurrency
            after = _threads_cpu()
            return {"calls": made, "cpu_ms": (time.process_time() - cpu) * 1000 / made,
                    "wall_ms": (time.perf_counter() - wall) * 1000 / made,
                    "threads_ms": {name: (after[name] - before.get(name, 0)) * 1000 / made for name in after}}

        return asyncio.run(calls_made())


def _figures(values) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls at once (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, variants alternated (default 3)")
    parser.add_argument("--baseline", type=Path, help="another checkout of Chatter, measured beside this one")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a variant's own process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.calls, args.concurrency)))
        return 0
    variants = {"this checkout": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, root in (variants.items() if round_ % 2 == 0 else reversed(variants.items())):
            log(f"round {round_ + 1}/{args.rounds}: {name} ({root}), {args.calls} calls, {args.concurrency} at once")
            # This file, run in the variant's checkout (its own code imported; a baseline may predate this file).
            one = (f"import runpy, sys; sys.argv = ['b8_threads', '--one', '--calls', '{args.calls}', "
                   f"'--concurrency', '{args.concurrency}']; runpy.run_path({str(Path(__file__))!r}, "
                   f"run_name='__main__')")
            done = subprocess.run([PYTHON, "-c", one], cwd=root, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(root)}, timeout=600)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-3000:])
                return 1
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nB8 in process: {args.calls} gateway calls per round, {args.concurrency} at once, {args.rounds} rounds "
          f"(variants alternated); CPU ms per call, per round")
    for name, rounds in results.items():
        print(f"\n{name}: process {_figures(r['cpu_ms'] for r in rounds)} "
              f"(wall per call {_figures(r['wall_ms'] for r in rounds)})")
        threads = sorted({t for r in rounds for t in r["threads_ms"]}, key=lambda t: -rounds[0]["threads_ms"].get(t, 0))
        for thread in threads:
            figures = [r["threads_ms"].get(thread, 0.0) for r in rounds]
            if max(figures) >= 0.005:
                print(f"  {thread:28s} {_figures(figures)}")
    return 0


if __name__ == "__main__":
    run_main(main)
