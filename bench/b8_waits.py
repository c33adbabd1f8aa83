"""B8's waits: where Chatter's gateway servers wait while clients queue (issue 46: under B8's 8 clients its two
processes used ~112% of the 2 cores). Chatter only (2 daphne or uvicorn processes, PostgreSQL + Redis, the B8 stub
upstream), `POST /v1/chat/completions` from --clients clients, in phases interleaved for --reps repetitions:
- one key: every client with the same gateway key (as B8 runs: every call's rows share their dimensions);
- a key per client: the same user's keys, one each (calls of different keys share no usage-rollup row).
Each phase: calls/s, p50, the servers' CPU per call (and of their event-loop thread apart), how long their threads
and PostgreSQL's waited for a core per call (schedstat's run delay: the machine's cores, not a lock), and pg_stat_activity
sampled every 10 ms: backends executing a statement, waiting on a lock (by statement), and in a transaction but
waiting for their process ('idle in transaction', by the statement they ran last: the process's time inside the
transaction, its row locks held).

    .venv/bin/python -m bench.b8_waits [--reps 2] [--duration 6] [--clients 8] [--server daphne]
"""
from __future__ import annotations

import argparse

from bench.b5_http_turns import loadgen
from bench.b5_servers import chatter_pair
from bench.b8_gateway import MAX_CONCURRENT_RUNS, UPSTREAM_KEY, gateway_key, start_stub
from bench.chatter_servers import chatter_database
from bench.machine import CpuMeter, Tree, format_cpu, loop_thread_cpu, machine_note, run_queue_seconds
from bench.pg_stats import PgActivity, services_counted
from bench.processes import BenchRun, log, run_main
from bench.stats import percentile


def _loop_cpu(pids: list[int]) -> tuple[float, float]:
    found = [loop_thread_cpu(pid) for pid in pids]
    return sum(main for main, _ in found), sum(rest for _, rest in found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    parser.add_argument("--duration", type=float, default=6, help="seconds per phase (default 6)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--server", default="daphne", choices=("daphne", "uvicorn"))
    args = parser.parse_args()

    with BenchRun("b8-waits") as run:
        services, _ = services_counted(run)
        stub = start_stub(run)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                    OPENAI_BASE_URL=f"http://{stub.targets(first_only=True)}/v1",
                                    OPENAI_API_KEY=UPSTREAM_KEY, CHATTER_PROVIDER_MAX_RETRIES=0,
                                    CHATTER_MAX_CONCURRENT_RUNS=MAX_CONCURRENT_RUNS)
        variant = chatter_pair(run, database, args.server)
        variant.kind = "openai"
        keys = [gateway_key(variant) for _ in range(args.clients)]
        phases = {"one key": keys[0], "a key per client": ",".join(keys)}
        variant.token = keys[0]
        loadgen(variant, clients=args.clients, duration=2)  # warm-up
        url = services.database_url_for(variant.database)
        print(f"\nB8 waits: Chatter on 2 {args.server} processes, PostgreSQL + Redis, {args.clients} clients, "
              f"{args.duration:g} s per phase")
        for rep in range(args.reps):
            for name in list(phases) if rep % 2 == 0 else list(reversed(phases)):
                variant.token = phases[name]
                log(f"rep {rep + 1}/{args.reps}: {name}")
                meter = CpuMeter({"servers": variant.pids, "postgresql": Tree(services.postmaster_pid())})
                loop0 = _loop_cpu(variant.pids)
                queued0 = run_queue_seconds(variant.pids), run_queue_seconds([services.postmaster_pid()])
                meter.start()
                activity = PgActivity(url, interval=0.01).start()
                result = loadgen(variant, clients=args.clients, duration=args.duration)
                pg, cpu, loop1 = activity.stop(), meter.stop(), _loop_cpu(variant.pids)
                queued1 = run_queue_seconds(variant.pids), run_queue_seconds([services.postmaster_pid()])
                rate = result["turns"] / result["elapsed"]
                per_call = {"loop": (loop1[0] - loop0[0]) / result["turns"] * 1000,
                            "other threads": (loop1[1] - loop0[1]) / result["turns"] * 1000}
                locks = sum(v for k, v in pg["waits_avg"].items() if k.startswith("Lock:"))
                print(f"\nrep {rep + 1}, {name}: {rate:.1f} calls/s, p50 {percentile(result['latencies'], 50) * 1000:.0f} "
                      f"ms, {result['failures']} failed; servers' CPU per call {cpu['servers'] / rate * 1000:.1f} ms "
                      f"(event-loop threads {per_call['loop']:.1f}, other threads {per_call['other threads']:.1f}); "
                      f"{format_cpu(cpu)}")
                print(f"  waiting for a core (runnable, not running) per call: the servers' threads "
                      f"{(queued1[0] - queued0[0]) / result['turns'] * 1000:.1f} ms, PostgreSQL's "
                      f"{(queued1[1] - queued0[1]) / result['turns'] * 1000:.1f} ms")
                print(f"  PostgreSQL: backends executing {pg['active_avg']:.2f}, of them waiting on a lock "
                      f"{locks:.2f}; in a transaction waiting for their process {pg['in_transaction_avg']:.2f}")
                for statement, share in pg["waiting_statements"].items():
                    print(f"    {share:.2f} waiting on a lock in  {statement[:110]}")
                for statement, share in pg["in_transaction_after"].items():
                    print(f"    {share:.2f} in a transaction after  {statement}")
        print(machine_note())
    return 0


if __name__ == "__main__":
    run_main(main)
