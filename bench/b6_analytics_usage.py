"""B6: `GET /api/v1/analytics/usage/` over 1,000,000 messages on PostgreSQL (target ≤ 100 ms).

What it does, in a temp dir, stopping everything on the way out:
1. PostgreSQL (scripts/services.sh), a fresh database migrated and seeded, daphne on a free loopback port.
2. Loads the data with COPY: `--users` users, 1 message pair (user + assistant) per chat turn, 10 turns per
   conversation over 1–3 days within the last `--days` days, one run per turn (95% completed, 3% failed, 2%
   cancelled — half of those before they started, without LLM calls), one LLM call per started run plus a
   second on 10% of them (a tool round), five provider/models, the built-in templates. Every row is what the
   engine would have written: an assistant message carries its run's tokens and cost (I3), conversations carry
   their sums (I1).
3. Builds the usage rollups from those rows with the project's rollup rebuild (the one `reconcile_aggregates --fix`
   uses), VACUUM ANALYZE, and checks the project's usage drift check finds nothing: the rollups equal the raw-row
   figures.
4. Measures the endpoint over HTTP (httpx, one keep-alive connection): for each group_by, a regular user's own
   usage and staff (everyone), all time and the last 30 days; `--reps` timed requests after 5 warm-up ones,
   interleaved round-robin. Prints median and p95, then EXPLAIN (ANALYZE, BUFFERS) of every query one request
   runs (captured in process with the same view).

    .venv/bin/python -m bench.b6_analytics_usage [--messages 1000000] [--users 200] [--days 90] [--reps 50]
"""
from __future__ import annotations

import argparse
import time
from datetime import timedelta

from bench import chatter_calls
from bench.b6_dataset import load, vacuum_analyze
from bench.chatter_servers import chatter_database, daphne
from bench.machine import CpuMeter, format_cpu, machine_note
from bench.processes import BenchRun, log, run_main
from bench.services import start_services
from bench.stats import median, percentile, table

def explain(sql: str) -> tuple[str, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        lines = [row[0] for row in cursor.fetchall()]
    execution = next((float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time")),
                     float("nan"))
    return "\n".join(lines), execution


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()

    import httpx

    groups = ("day", "provider", "model", "template", "conversation")
    with BenchRun("b6") as bench:
        services = start_services(bench)
        database = chatter_database(bench, "pg", DATABASE_URL=services.database_url)
        chatter_calls.django_setup(database.env)
        from django.apps import apps
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        UsageRollup = apps.get_model("analytics", "UsageRollup")

        print(machine_note())
        log(f"loading {args.messages:,} messages with COPY")
        loaded = load(messages=args.messages, users=args.users, days=args.days)
        log(f"loaded in {loaded['load_s']:.0f} s; building the rollups")
        started = time.monotonic()
        rollups = chatter_calls.usage_rollups_rebuild()
        rebuild_s = time.monotonic() - started
        vacuum_s = vacuum_analyze()
        started = time.monotonic()
        drift = chatter_calls.usage_drift()
        drift_s = time.monotonic() - started
        print(f"data: {loaded['users']} users, {loaded['conversations']:,} conversations, "
              f"{loaded['executions']:,} runs, {loaded['llm_calls']:,} LLM calls, {loaded['messages']:,} messages "
              f"over {args.days} days; loaded with COPY in {loaded['load_s']:.0f} s")
        print(f"rollups: {rollups:,} rows built from the raw rows in {rebuild_s:.1f} s (the rollup rebuild); "
              f"VACUUM ANALYZE {vacuum_s:.1f} s")
        print(f"usage drift: {len(drift)} rows differ from the raw-row figures (checked in {drift_s:.1f} s)")
        if drift:
            raise SystemExit(f"the rollups drift: {drift[:3]}")

        user_model = get_user_model()
        staff = user_model.objects.get(pk=database.user_id)
        user_model.objects.filter(pk=staff.pk).update(is_staff=True, is_superuser=True)
        staff.refresh_from_db()
        one_user = user_model.objects.get(pk=loaded["owner_ids"][42 % args.users])
        user_rows = UsageRollup.objects.filter(owner=one_user).count()
        print(f"one user ({one_user.username}): {user_rows:,} rollup rows; everyone: {rollups:,} rollup rows")
        tokens = {"user": chatter_calls.api_token_key(one_user), "staff": chatter_calls.api_token_key(staff)}
        last_30 = {"start": str(timezone.now().date() - timedelta(days=29))}
        # The first case reads an empty range: the whole stack (HTTP, token auth, DRF, the queries) with no rows.
        cases = [("staff", "empty range", "day")] + [
            (who, scope, group) for scope in ("all time", "last 30 days") for who in ("user", "staff")
            for group in groups]
        ranges = {"all time": {}, "last 30 days": last_30, "empty range": {"start": "2000-01-01", "end": "2000-01-01"}}

        server = daphne(bench, database)
        timings: dict = {case: [] for case in cases}
        bodies: dict = {}
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            def request(case) -> float:
                who, scope, group = case
                params = {"group_by": group, **ranges[scope]}
                begun = time.perf_counter()
                response = client.get("/api/v1/analytics/usage/", params=params,
                                      headers={"Authorization": f"Token {tokens[who]}"})
                elapsed = time.perf_counter() - begun
                response.raise_for_status()
                bodies[case] = response.json()
                return elapsed

            log("warming up")
            for _ in range(5):
                for case in cases:
                    request(case)
            log(f"measuring {len(cases)} cases x {args.reps} requests, interleaved")
            meter = CpuMeter({"daphne": server.pid})
            meter.start()
            for _ in range(args.reps):
                for case in cases:
                    timings[case].append(request(case))
            cpu = meter.stop()

        rows = []
        for case in cases:
            values = [t * 1000 for t in timings[case]]
            body = bodies[case]
            rows.append([f"{case[0]} / {case[1]} / {case[2]}", f"{body['count']:,}",
                         f"{body['totals']['messages']:,}", f"{median(values):.1f}", f"{percentile(values, 95):.1f}",
                         f"{max(values):.1f}"])
        print()
        print("GET /api/v1/analytics/usage/ over HTTP (daphne, one keep-alive connection), ms:")
        print(table(rows, ["who / range / group_by", "groups", "messages in range", "median", "p95", "max"]))
        worst = max(percentile([t * 1000 for t in timings[case]], 95) for case in cases)
        print(f"\nworst p95 {worst:.1f} ms (target: 100 ms)")
        print(f"CPU while measuring: {format_cpu(cpu)} (PostgreSQL is in 'others')")

        print("\nEXPLAIN (ANALYZE, BUFFERS) of the queries of one request (in process, same view):")
        for who, user in (("staff", staff), ("user", one_user)):
            for group in groups:
                for index, sql in enumerate(chatter_calls.usage_request_sql(user, {"group_by": group})):
                    plan, ms = explain(sql)
                    kind = ("rows and number of groups" if "OVER ()" in sql else "the page's rows" if "GROUP BY" in sql
                            else "totals")
                    print(f"\n--- {who}, group_by={group}, query {index + 1} ({kind}): {ms:.1f} ms\n{sql}\n{plan}")
        print("\n" + machine_note())
    return 0


if __name__ == "__main__":
    run_main(main)
