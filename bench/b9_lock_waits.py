"""B9: lock waits at 16 concurrent clients on 2 server processes, PostgreSQL. Target: under 10% of the
busy backends waiting on a lock, 0 drift.

Chatter on 2 daphne processes, PostgreSQL + Redis (scripts/services.sh), the `local` model answering at once;
16 clients of B5's load generator (`POST /api/v1/chat/`, a sync turn of universal_chat, everything persisted),
each with a key of its own user, spread over both processes for --duration s, while pg_stat_activity is sampled
every 20 ms (bench.pg_stats.PgActivity): how many client backends are executing a statement (busy), and how
many of them wait on a heavyweight lock (wait_event_type `Lock`: advisory, transactionid, tuple, relation). Then
a second phase with one user's key for every client (CHATTER_MAX_CONCURRENT_RUNS raised to 64 for it): the
same turns, queued on what one user's runs share. Phases interleave for --reps repetitions. After the load:
`reconcile_aggregates` (exit 0: no drift) and `audit_verify` (the chain whole, every queued row in it).

    .venv/bin/python -m bench.b9_lock_waits [--reps 2] [--duration 15] [--clients 16]
"""
from __future__ import annotations

import argparse
import subprocess

from bench.b5_http_turns import loadgen
from bench.b5_servers import chatter_pair
from bench.chatter_servers import add_user, chatter_database, daphne
from bench.machine import CpuMeter, machine_note
from bench.pg_stats import PgActivity, services_counted
from bench.processes import PYTHON, ROOT, BenchRun, log, run_main
from bench.stats import median


def lock_share(activity: dict) -> tuple[float, float, dict]:
    """(busy backends, of them waiting on a heavyweight lock, those waits by event) from PgActivity.stop()."""
    locks = {k: v for k, v in activity["waits_avg"].items() if k.startswith("Lock:")}
    return activity["active_avg"], sum(locks.values()), locks


def manage(database, *args: str) -> tuple[int, str]:
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=database.env, capture_output=True, text=True,
                            check=False, timeout=600)
    return result.returncode, (result.stdout + result.stderr).strip().splitlines()[-1:][0] if (
        result.stdout + result.stderr).strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    parser.add_argument("--duration", type=float, default=15, help="seconds of each phase (default 15)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    args = parser.parse_args()

    with BenchRun("b9") as run:
        services, _db = services_counted(run)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                    CHATTER_LOCAL_TOKEN_DELAY_MS=0, CHATTER_MAX_CONCURRENT_RUNS=64)
        variant = chatter_pair(run, database, "daphne")
        log(f"creating {args.clients} users with a key each")
        server = daphne(run, database, label="keys")  # a third process only to sign the users in
        tokens = [add_user(server, database, f"b9user{i}") for i in range(args.clients)]
        phases = {"one user per client": ",".join(tokens), "one user for every client": variant.token}
        results: dict[str, list[dict]] = {name: [] for name in phases}
        url = services.database_url_for(variant.database)
        for rep in range(args.reps):
            order = list(phases) if rep % 2 == 0 else list(reversed(phases))
            for name in order:
                log(f"rep {rep + 1}/{args.reps}: {name}: {args.clients} clients for {args.duration:.0f} s")
                meter = CpuMeter({"servers": variant.pids})
                meter.start()
                activity = PgActivity(url).start()
                variant.token = phases[name]
                load = loadgen(variant, clients=args.clients, duration=args.duration)
                pg = activity.stop()
                results[name].append({"load": load, "pg": pg, "cpu": meter.stop()})
        drift_code, drift_line = manage(database, "reconcile_aggregates")
        audit_code, audit_line = manage(database, "audit_verify")

        print()
        print(f"B9: {args.clients} clients on 2 daphne processes, PostgreSQL + Redis, {args.reps} repetitions of "
              f"{args.duration:.0f} s per phase")
        for name, rows in results.items():
            print(f"\n{name}:")
            for i, row in enumerate(rows, 1):
                busy, waiting, locks = lock_share(row["pg"])
                load = row["load"]
                events = ", ".join(f"{k} {v:.2f}" for k, v in locks.items()) or "none"
                others = ", ".join(f"{k} {v:.2f}" for k, v in row["pg"]["waits_avg"].items()
                                   if not k.startswith("Lock:")) or "none"
                print(f"  rep {i}: {load['turns'] / load['elapsed']:.1f} turns/s, {load['failures']} failed; busy backends {busy:.2f}, "
                      f"waiting on a lock {waiting:.2f} (**{100 * waiting / busy if busy else 0:.1f}%**: {events}); "
                      f"other waits: {others}; peak connections {row['pg']['peak_connections']}")
                for statement, waiting_on in row["pg"]["waiting_statements"].items():
                    print(f"      {waiting_on:.2f} waiting in  {statement}")
            shares = [lock_share(r["pg"]) for r in rows]
            print(f"  median share of busy backends waiting on a lock: "
                  f"{100 * median([w / b if b else 0 for b, w, _ in shares]):.1f}%")
        print(f"\nreconcile_aggregates: exit {drift_code} ({drift_line})")
        print(f"audit_verify: exit {audit_code} ({audit_line})")
        print(machine_note())
    return 0 if drift_code == 0 and audit_code == 0 else 1


if __name__ == "__main__":
    run_main(main)
