"""B13: what OpenTelemetry export adds to a chat turn. Two daphne processes of this checkout on one PostgreSQL + Redis
database, one exporting traces (batch span processor, OTLP/HTTP to a receiver on loopback: tests/otlp_receiver.py,
decoding every span) and one with tracing off; sequential turns alternate between them turn by turn (B5's chat
turn, the `local` provider), 100 ms apart (cold) and 10 ms apart (warm). Target: at most 0.5 ms more at p50.

    .venv/bin/python -m bench.b13_tracing [--reps 3] [--count 60]
"""
from __future__ import annotations

import argparse
import asyncio

from bench.ab_turns import alternated
from bench.chatter_servers import Server, bench_token, chatter_database
from bench.machine import machine_note
from bench.processes import HOST, PYTHON, BenchRun, free_port, log, run_main, wait_listening
from bench.services import start_services
from bench.stats import median, ms
from tests.otlp_receiver import OTLPReceiver


def daphne(run: BenchRun, database, label: str, extra: dict) -> Server:
    port = free_port()
    env = {**database.env, **extra}
    log_name = f"daphne-{label}-{port}.log"
    process = run.spawn([PYTHON, "-m", "daphne", "-b", HOST, "-p", str(port), "chatter_project.asgi:application"],
                        env=env, log_name=log_name)
    wait_listening(process, port, run.tmp / log_name, what=f"daphne ({label})")
    log(f"daphne ({label}) on {HOST}:{port}, pid {process.pid}")
    return Server(process=process, port=port, log_path=run.tmp / log_name, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--count", type=int, default=60)
    args = parser.parse_args()
    receiver = OTLPReceiver().start()
    try:
        with BenchRun("b13-tracing") as run:
            services = start_services(run)
            database = chatter_database(run, "postgres", DATABASE_URL=services.database_url,
                                        REDIS_URL=services.redis_url, CHATTER_LOCAL_TOKEN_DELAY_MS=0)
            servers = {"off": daphne(run, database, "off", {}),
                       "on": daphne(run, database, "on", {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})}
            token = bench_token(servers["on"], database)
            targets = {name: f"{HOST}:{server.port}" for name, server in servers.items()}
            print(f"\nB13: a chat turn with traces exported (on) and off, one daphne each, PostgreSQL + Redis; "
                  f"sequential medians over {args.count} alternated turns, ms")
            for rep in range(1, args.reps + 1):
                line = [f"rep {rep}:"]
                for pause in (0.1, 0.01):
                    latencies = asyncio.run(alternated(targets, token, count=args.count, pause=pause))
                    off, on = median(latencies["off"]), median(latencies["on"])
                    line.append(f"{'cold' if pause > 0.05 else 'warm'} off {ms(off)} on {ms(on)} ({ms(on - off)})")
                print("  ".join(line), flush=True)
            print(f"spans received: {len(receiver.spans)}")
            print(machine_note())
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    run_main(main)
