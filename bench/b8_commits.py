"""B8's question about a group commit: what would concurrent gateway calls save by sharing one transaction for their
end writes instead of one each? On the bench's PostgreSQL (scripts/services.sh: fsync and synchronous_commit off,
as the B8 servers run it), a call's end stands in as `--statements` single-row INSERTs with a RETURNING (the run's end
is 4 statements); each call in a transaction of its own, then `--group` calls to a transaction (what a group commit
would make of them, at best: no waiting, no savepoints). Per call: wall time, this process's CPU and the PostgreSQL
backend's (from /proc), and transactions (pg_stat_database's xact_commit).

    .venv/bin/python -m bench.b8_commits [--calls 3000] [--statements 4] [--group 4]
"""
from __future__ import annotations

import argparse
import time

import psycopg

from bench.machine import cpu_seconds
from bench.processes import BenchRun, log, run_main
from bench.services import start_services
from bench.stats import table

TABLE = "CREATE TABLE IF NOT EXISTS b8_commit (id bigserial PRIMARY KEY, execution uuid, tokens int, cost numeric," \
        " at timestamptz DEFAULT now(), data jsonb)"
INSERT = "INSERT INTO b8_commit (execution, tokens, cost, data) VALUES (gen_random_uuid(), %s, %s, %s) RETURNING id"


def _commits(connection: psycopg.Connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def _measure(connection: psycopg.Connection, backend: int, *, calls: int, statements: int, group: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
    commits = _commits(connection)
    started, cpu, server = time.perf_counter(), time.process_time(), cpu_seconds(backend)
    for first in range(0, calls, group):
        with connection.transaction(), connection.cursor() as cursor:
            for _ in range(min(group, calls - first) * statements):
                cursor.execute(INSERT, (18, "0.0000189", '{"finish_reason": "stop"}'), prepare=True)
                cursor.fetchone()
    wall, cpu, server = time.perf_counter() - started, time.process_time() - cpu, cpu_seconds(backend) - server
    time.sleep(0.6)  # (the statistics collector's counters are flushed about every half second)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
    return {"wall": wall / calls, "client": cpu / calls, "server": server / calls,
            "xacts": (_commits(connection) - commits - 2) / calls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--statements", type=int, default=4, help="statements of a call's end (default 4)")
    parser.add_argument("--group", type=int, default=4, help="calls sharing one transaction (default 4)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with BenchRun("b8-commits") as run:
        services = start_services(run)
        with psycopg.connect(services.database_url, autocommit=True) as connection:
            connection.execute(TABLE)
            backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
            rows = []
            for rep in range(args.reps):
                for group in (1, args.group) if rep % 2 == 0 else (args.group, 1):  # (interleaved)
                    got = _measure(connection, backend, calls=args.calls, statements=args.statements, group=group)
                    rows.append([rep + 1, group, f"{got['wall'] * 1000:.3f}", f"{got['client'] * 1000:.3f}",
                                 f"{got['server'] * 1000:.3f}", f"{got['xacts']:.2f}"])
                    log(f"rep {rep + 1}, {group} call(s) a transaction: {rows[-1][2:]}")
        print(f"\nB8 commits: {args.calls} calls of {args.statements} INSERTs each, one transaction per call or "
              f"{args.group} calls to one (fsync and synchronous_commit off, as the bench runs PostgreSQL); per call")
        print(table(rows, ["rep", "calls a transaction", "wall ms", "client CPU ms", "backend CPU ms",
                           "transactions"]))
    return 0


if __name__ == "__main__":
    run_main(main)
