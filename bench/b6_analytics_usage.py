"""B6: `GET /api/v1/analytics/usage/` over 1,000,000 messages on PostgreSQL (target ≤ 100 ms).

What it does, in a temp dir, stopping everything on the way out:
1. PostgreSQL (scripts/services.sh), a fresh database migrated and seeded, daphne on a free loopback port.
2. Loads the data with COPY: `--users` users, 1 message pair (user + assistant) per chat turn, 10 turns per
   conversation over 1–3 days within the last `--days` days, one run per turn (95% completed, 3% failed, 2%
   cancelled — half of those before they started, without LLM calls), one LLM call per started run plus a
   second on 10% of them (a tool round), five provider/models, the built-in templates. Every row is what the
   engine would have written: an assistant message carries its run's tokens and cost (I3), conversations carry
   their sums (I1).
3. Builds the usage rollups from those rows with `analytics.services.usage_rollups_rebuild()` (the same function
   `reconcile_aggregates --fix` uses), VACUUM ANALYZE, and checks `usage_drift()` is empty: the rollups equal the
   raw-row figures.
4. Measures the endpoint over HTTP (httpx, one keep-alive connection): for each group_by, a regular user's own
   usage and staff (everyone), all time and the last 30 days; `--reps` timed requests after 5 warm-up ones,
   interleaved round-robin. Prints median and p95, then EXPLAIN (ANALYZE, BUFFERS) of every query one request
   runs (captured in process with the same view).

    .venv/bin/python bench/b6_analytics_usage.py [--messages 1000000] [--users 200] [--days 90] [--reps 50]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(ROOT))  # the project itself, for Django in this process

from harness import BenchRun, CpuMeter, format_cpu, log, machine_note, median, percentile, table

TURNS_PER_CONVERSATION = 10
MODELS = [  # provider, model, share of conversations
    ("local", "local-echo-1", 0.40),
    ("openai", "gpt-4o-mini", 0.30),
    ("openai", "gpt-4o", 0.15),
    ("anthropic", "claude-3-5-haiku-latest", 0.10),
    ("openai", "gpt-4.1", 0.05),
]
EIGHT_PLACES = Decimal("0.00000001")


def django_setup(env: dict) -> None:
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    import django

    django.setup()


class Copier:
    """COPY rows of one model: the varying columns per row, every other concrete column at its field default
    (prepared once). Generic over the models' fields, so columns added later with defaults need nothing here."""

    def __init__(self, model, varying: tuple[str, ...]):
        from django.db import connection

        fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.get_internal_type().endswith(
            "AutoField"))]
        by_attname = {f.attname: f for f in fields}
        self.varying = varying
        self.constant_fields = [f for f in fields if f.attname not in varying]
        self.constants = tuple(f.get_db_prep_save(f.get_default(), connection) for f in self.constant_fields)
        columns = [by_attname[name].column for name in varying] + [f.column for f in self.constant_fields]
        quote = connection.ops.quote_name
        self.sql = f"COPY {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        self.rows: list[tuple] = []
        self.written = 0

    def add(self, *values) -> None:
        self.rows.append(values)

    def flush(self, cursor) -> None:
        if not self.rows:
            return
        with cursor.copy(self.sql) as copy:
            for row in self.rows:
                copy.write_row(row + self.constants)
        self.written += len(self.rows)
        self.rows.clear()


def load(*, messages: int, users: int, days: int, seed: int = 6) -> dict:
    """Write the data set; returns what was written and how long it took."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from analytics.selectors import price_for_call
    from conversations.models import Conversation, Message
    from workflows.engine.usage import Usage, cost_for_usage
    from workflows.models import LLMCall, WorkflowExecution, WorkflowTemplate

    rng = random.Random(seed)
    started = time.monotonic()
    user_model = get_user_model()
    owners = list(user_model.objects.bulk_create(
        [user_model(username=f"user{n:04d}", password="!") for n in range(users)]))
    owner_ids = [user.pk for user in owners]
    templates = list(WorkflowTemplate.objects.filter(is_builtin=True).order_by("key").values_list("pk", "key"))
    chat = next(pk for pk, key in templates if key == "universal_chat")
    prices = {(p, m): price_for_call(provider=p, model=m) for p, m, _ in MODELS}
    now = datetime.now(dt_timezone.utc).replace(microsecond=0)
    first_day = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0)
    conversations_n = messages // (2 * TURNS_PER_CONVERSATION)

    conversations = Copier(Conversation, ("id", "owner_id", "title", "status", "created_at", "updated_at",
                                          "last_message_at", "message_count", "prompt_tokens", "completion_tokens",
                                          "total_tokens", "total_cost"))
    runs = Copier(WorkflowExecution, ("id", "owner_id", "workflow_type", "template_id", "conversation_id", "status",
                                      "mode", "provider", "model", "error_type", "started_at", "completed_at",
                                      "execution_time_ms", "prompt_tokens", "completion_tokens", "total_tokens",
                                      "cost", "llm_calls", "created_at"))
    calls = Copier(LLMCall, ("execution_id", "provider", "model", "prompt_tokens", "completion_tokens",
                             "total_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost", "duration_ms",
                             "created_at"))
    rows = Copier(Message, ("id", "conversation_id", "sequence", "role", "content", "execution_id", "prompt_tokens",
                            "completion_tokens", "total_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost",
                            "provider_used", "model_used", "finish_reason", "response_time_ms", "created_at"))
    weights = [share for _, _, share in MODELS]
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        for index in range(conversations_n):
            conversation_id = uuid.uuid4()
            owner = owner_ids[index % users]
            provider, model, _ = rng.choices(MODELS, weights)[0]
            price = prices[(provider, model)]
            template = chat if rng.random() < 0.8 else rng.choice(templates)[0]
            opened = first_day + timedelta(days=rng.randrange(days), seconds=rng.randrange(86_400))
            opened = min(opened, now - timedelta(hours=3))
            span = rng.choice((0, 0, 1, 2))  # the conversation goes on over 1-3 days
            at = opened
            totals = [0, 0, Decimal("0")]
            for turn in range(TURNS_PER_CONVERSATION):
                at = min(at + timedelta(seconds=rng.randrange(30, 600) + span * 86_400 // TURNS_PER_CONVERSATION),
                         now - timedelta(seconds=60))
                run_id = uuid.uuid4()
                roll = rng.random()
                status = "completed" if roll < 0.95 else "failed" if roll < 0.98 else "cancelled"
                calls_n = 0 if (status == "cancelled" and roll > 0.99) else (2 if rng.random() < 0.1 else 1)
                run_usage = Usage()
                elapsed = rng.randrange(200, 4000)
                for call in range(calls_n):
                    prompt, completion = rng.randrange(20, 2000), rng.randrange(5, 800)
                    cached = rng.randrange(0, prompt // 2) if provider == "openai" and rng.random() < 0.3 else 0
                    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached)
                    cost = cost_for_usage(usage, price)
                    run_usage += Usage(prompt_tokens=prompt, completion_tokens=completion,
                                       cached_prompt_tokens=cached, cost=cost)
                    calls.add(run_id, provider, model, prompt, completion, prompt + completion, cached, 0, cost,
                              elapsed // 2, at + timedelta(milliseconds=elapsed * (call + 1) // 2))
                done = at + timedelta(milliseconds=elapsed)
                runs.add(run_id, owner, "chat", template, conversation_id, status, "sync", provider, model,
                         "" if status == "completed" else ("limit_exceeded" if status == "failed" else "cancelled"),
                         at, done, elapsed, run_usage.prompt_tokens, run_usage.completion_tokens,
                         run_usage.total_tokens, run_usage.cost, calls_n, at)
                rows.add(uuid.uuid4(), conversation_id, 2 * turn + 1, "user", f"question {turn}", run_id, 0, 0, 0,
                         0, 0, Decimal("0"), provider, model, "", 0, at)
                rows.add(uuid.uuid4(), conversation_id, 2 * turn + 2, "assistant", f"answer {turn}", run_id,
                         run_usage.prompt_tokens, run_usage.completion_tokens, run_usage.total_tokens,
                         run_usage.cached_prompt_tokens, 0, run_usage.cost, provider, model,
                         "stop" if status == "completed" else status, elapsed, done)
                totals[0] += run_usage.prompt_tokens
                totals[1] += run_usage.completion_tokens
                totals[2] += run_usage.cost
            conversations.add(conversation_id, owner, f"conversation {index}", "active", opened, done, done,
                              2 * TURNS_PER_CONVERSATION, totals[0], totals[1], totals[0] + totals[1], totals[2])
            if len(rows.rows) >= 100_000 or index == conversations_n - 1:
                for copier in (conversations, runs, calls, rows):  # parents first: each COPY commits on its own
                    copier.flush(raw)
                if (index + 1) % 10_000 < 5 or index == conversations_n - 1:
                    log(f"  {rows.written:,} messages written ({time.monotonic() - started:.0f} s)")
    return {"users": users, "conversations": conversations.written, "executions": runs.written,
            "llm_calls": calls.written, "messages": rows.written, "load_s": time.monotonic() - started,
            "owner_ids": owner_ids}


def vacuum_analyze() -> float:
    from django.db import connection

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def captured_queries(user, params: dict) -> list[str]:
    """The SQL one request of the endpoint runs, as the view runs it (in process, authenticated directly)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIRequestFactory, force_authenticate

    from analytics.api.views import UsageView

    request = APIRequestFactory().get("/api/v1/analytics/usage/", params, HTTP_HOST="127.0.0.1")
    force_authenticate(request, user=user)
    with CaptureQueriesContext(connection) as queries:
        response = UsageView.as_view()(request)
        response.render()
    assert response.status_code == 200, response.content
    return [query["sql"] for query in queries.captured_queries]


def explain(sql: str) -> tuple[str, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        lines = [row[0] for row in cursor.fetchall()]
    execution = next((float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time")),
                     float("nan"))
    return "\n".join(lines), execution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()

    import httpx

    groups = ("day", "provider", "model", "template", "conversation")
    with BenchRun("b6") as bench:
        services = bench.services()
        database = bench.database("pg", DATABASE_URL=services["DATABASE_URL"])
        django_setup(database.env)
        from django.contrib.auth import get_user_model
        from django.utils import timezone
        from rest_framework.authtoken.models import Token

        from analytics.models import UsageRollup
        from analytics.services import usage_drift, usage_rollups_rebuild

        print(machine_note())
        log(f"loading {args.messages:,} messages with COPY")
        loaded = load(messages=args.messages, users=args.users, days=args.days)
        log(f"loaded in {loaded['load_s']:.0f} s; building the rollups")
        started = time.monotonic()
        rollups = usage_rollups_rebuild()
        rebuild_s = time.monotonic() - started
        vacuum_s = vacuum_analyze()
        started = time.monotonic()
        drift = usage_drift()
        drift_s = time.monotonic() - started
        print(f"data: {loaded['users']} users, {loaded['conversations']:,} conversations, "
              f"{loaded['executions']:,} runs, {loaded['llm_calls']:,} LLM calls, {loaded['messages']:,} messages "
              f"over {args.days} days; loaded with COPY in {loaded['load_s']:.0f} s")
        print(f"rollups: {rollups:,} rows built from the raw rows in {rebuild_s:.1f} s (usage_rollups_rebuild); "
              f"VACUUM ANALYZE {vacuum_s:.1f} s")
        print(f"usage_drift(): {len(drift)} rows differ from the raw-row figures (checked in {drift_s:.1f} s)")
        if drift:
            raise SystemExit(f"the rollups drift: {drift[:3]}")

        user_model = get_user_model()
        staff = user_model.objects.get(pk=database.user_id)
        user_model.objects.filter(pk=staff.pk).update(is_staff=True, is_superuser=True)
        staff.refresh_from_db()
        one_user = user_model.objects.get(pk=loaded["owner_ids"][42 % args.users])
        user_rows = UsageRollup.objects.filter(owner=one_user).count()
        print(f"one user ({one_user.username}): {user_rows:,} rollup rows; everyone: {rollups:,} rollup rows")
        tokens = {"user": Token.objects.create(user=one_user).key, "staff": Token.objects.create(user=staff).key}
        last_30 = {"start": str(timezone.now().date() - timedelta(days=29))}
        # The first case reads an empty range: the whole stack (HTTP, token auth, DRF, the queries) with no rows.
        cases = [("staff", "empty range", "day")] + [
            (who, scope, group) for scope in ("all time", "last 30 days") for who in ("user", "staff")
            for group in groups]
        ranges = {"all time": {}, "last 30 days": last_30, "empty range": {"start": "2000-01-01", "end": "2000-01-01"}}

        server = bench.daphne(database)
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
            meter = CpuMeter({"daphne": server.process.pid})
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
                for index, sql in enumerate(captured_queries(user, {"group_by": group})):
                    plan, ms = explain(sql)
                    kind = ("rows and number of groups" if "OVER ()" in sql else "the page's rows" if "GROUP BY" in sql
                            else "totals")
                    print(f"\n--- {who}, group_by={group}, query {index + 1} ({kind}): {ms:.1f} ms\n{sql}\n{plan}")
        print("\n" + machine_note())


if __name__ == "__main__":
    main()
