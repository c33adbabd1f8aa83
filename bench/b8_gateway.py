"""B8: the gateway's added latency (p50, p99) and throughput at 8 and 32 clients, side by
side with LiteLLM's proxy, in front of the same instant OpenAI stub upstream. Target: at most half of LiteLLM's
added latency (p50 and p99) and at least 2x its throughput at 8 and 32 clients, Chatter recording every call as a
run with exact usage.

Side by side in one run, every server on free loopback ports:
- upstream: the project's OpenAI stub as a process (bench/b8_stub.py), answering every chat completion at once
            with the same reply and usage (9 + 9 tokens), keep-alive; called straight, it is the floor;
- chatter-daphne, chatter-uvicorn: Chatter on 2 daphne processes, and on 2 uvicorn processes (uvloop,
            httptools: LiteLLM's own server stack, the fair comparison), one PostgreSQL database + Redis
            (scripts/services.sh), its `openai` provider pointed at the stub; `POST /v1/chat/completions` with a
            key of the `gateway` scope: every call a run (execution, node, LLM call priced, events, audit);
- litellm:  LiteLLM's stock proxy (`litellm[proxy]`, bench/requirements-litellm.txt, in var/bench/litellm-venv,
            made on first use: pip needs PyPI once), 2 processes, `gpt-4o-mini` routed to the stub, its master key.
            With its database (`--litellm-db`, a database of its own on the same PostgreSQL, spend logs on) when its
            Prisma engines can run: they are downloaded at run time from Prisma's servers, which these machines
            cannot reach, so by default it runs as it can here, without a database (nothing recorded).
One load generator for all (bench/b5_loadgen.py, kind `openai`, HTTP/1.1 keep-alive, client i on process i % 2).

Each repetition: sequential calls interleaved call by call across the variants (one client each, the order rotating
every round, 25 ms apart), from which the added latency is read (a gateway's p50 and p99 less the stub's); the same
for streamed calls (`"stream": true`, usage included), read by a socket client (bench/sse_client.py), from which
the added time to the first token is read (to the first chunk with content, less the stub's); then
for 8 and 32 clients, each variant for --duration s (order rotating), with CPU per process. Before the
repetitions, statements and transactions per call from PostgreSQL's own counters (bench/pg_stats.py); after them,
Chatter's exactness: one run per call sent, each with the stub's usage, I2 and I3, and `reconcile_aggregates`'
drift check.

    .venv/bin/python -m bench.b8_gateway [--reps 2] [--duration 10] [--seq-count 200] [--stream-count 100]
        [--clients 8,32] [--servers daphne,uvicorn] [--litellm-db] [--profile]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import httpx

from bench import chatter_calls
from bench.b5_http_turns import idle_work, loadgen, round_robin
from bench.b5_loadgen import MESSAGE
from bench.b5_servers import Variant, Venv, chatter_pair
from bench.b8_stub import USAGE
from bench.chatter_servers import chatter_database
from bench.machine import CpuMeter, Tree, format_cpu, machine_note, process_tree
from bench.pg_stats import DbWork, services_counted, work_per_turn
from bench.processes import BENCH_DIR, HOST, PYTHON, ROOT, VAR_DIR, BenchRun, free_port, log, run_main, \
    wait_http, wait_listening
from bench.pyspy import Profile
from bench.sse_client import SseClient
from bench.stats import median, percentile, table

LITELLM_VENV = Venv(VAR_DIR / "litellm-venv", BENCH_DIR / "requirements-litellm.txt")
LITELLM_DATABASE = "litellm"
LITELLM_KEY = "sk-bench-litellm-master"
UPSTREAM_KEY = "sk-bench-upstream"
MODEL = "gpt-4o-mini"
# One user's runs at once: above the most clients (LiteLLM's master key has no such limit).
MAX_CONCURRENT_RUNS = 64
LATENCY_RATIO_TARGET = 0.5  # at most half of LiteLLM's added latency
THROUGHPUT_TARGET = 2.0  # at least twice its calls/s
FOCUS = ("gateway/", "workflows/", "chatter_project/", "conversations/", "analytics/", "audit/", "budgets/",
         "django/db/", "psycopg/", "rest_framework/", "django/core/handlers", "asgiref/", "daphne/", "twisted/",
         "uvicorn/", "httpx/", "httpcore/", "keys/", "core/")


def start_stub(run: BenchRun) -> Variant:
    port = free_port()
    process = run.spawn([PYTHON, "-m", "bench.b8_stub", "--port", str(port)], env=dict(os.environ),
                        log_name=f"stub-{port}.log")
    wait_listening(process, port, run.tmp / f"stub-{port}.log", what="the OpenAI stub")
    log(f"OpenAI stub on {HOST}:{port}, pid {process.pid}")
    return Variant("upstream", "openai", [port], [process.pid], note="the stub itself (the floor)")


def gateway_key(variant: Variant) -> str:
    """A key of the bench user's with the `gateway` scope only (POST /api/v1/keys/ with its API token)."""
    response = httpx.post(f"http://{variant.targets(first_only=True)}/api/v1/keys/", timeout=10,
                          json={"name": "b8", "scopes": ["gateway"]},
                          headers={"Authorization": f"Token {variant.token}"})
    response.raise_for_status()
    return response.json()["key"]


def chatter_gateways(run: BenchRun, services, stub: Variant, servers: list[str],
                     baseline: Path | None = None) -> tuple[dict[str, Variant], object]:
    """Chatter on each server stack of `servers` (daphne, uvicorn), 2 processes each, all on one database and one
    gateway key."""
    database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                OPENAI_BASE_URL=f"http://{stub.targets(first_only=True)}/v1",
                                OPENAI_API_KEY=UPSTREAM_KEY, CHATTER_PROVIDER_MAX_RETRIES=0,
                                CHATTER_MAX_CONCURRENT_RUNS=MAX_CONCURRENT_RUNS)
    variants, key = {}, ""
    for server in servers + (["baseline"] if baseline else []):
        variant = chatter_pair(run, database, server, root=baseline if server == "baseline" else None)
        variant.kind = "openai"
        variant.token = key = key or gateway_key(variant)
        variant.note = f"CHATTER_MAX_CONCURRENT_RUNS={MAX_CONCURRENT_RUNS} (the default 10 refuses 32 clients' calls)"
        variants[variant.name] = variant
    return variants, database


def litellm_pair(run: BenchRun, services, stub: Variant, *, with_database: bool) -> Variant:
    """LiteLLM's proxy as its docs run it (`litellm --config`), 2 processes, `gpt-4o-mini` routed to the stub."""
    LITELLM_VENV.ensure()
    config = run.tmp / "litellm.yaml"
    config.write_text(
        f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
        f"      api_base: http://{stub.targets(first_only=True)}/v1\n      api_key: {UPSTREAM_KEY}\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "PYTHONPATH"))}
    # Its model prices from the package, not fetched at start (nothing leaves the machine).
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    database = None
    if with_database:
        env["DATABASE_URL"] = services.create_database(LITELLM_DATABASE)
        env["ENFORCE_PRISMA_MIGRATION_CHECK"] = "true"
        database = LITELLM_DATABASE
    ports, pids, logs = [], [], []
    for i in (1, 2):
        port = free_port()
        log_name = f"litellm{i}-{port}.log"
        process = run.spawn([LITELLM_VENV.bin("litellm"), "--config", str(config), "--host", HOST, "--port",
                             str(port), "--telemetry", "False"], env=env, log_name=log_name, cwd=run.tmp)
        wait_http(process, port, "/health/liveliness", run.tmp / log_name, what="litellm", timeout=180)
        log(f"LiteLLM proxy {i} on {HOST}:{port}, pid {process.pid}")
        ports.append(port)
        pids += process_tree(process.pid)
        logs.append(run.tmp / log_name)
    note = ("its database on (spend logs)" if with_database else
            "without a database (its Prisma engines cannot be downloaded here): nothing recorded")
    return Variant("litellm", "openai", ports, pids, token=LITELLM_KEY, database=database, logs=logs, note=note)


def database_work(db: DbWork, variants: dict[str, Variant], idle: dict, count: int) -> dict[str, dict]:
    """Statements and transactions per call of each variant with a database: `count` sequential calls between two
    settled readings of PostgreSQL's counters, less the idle background work."""
    found = {}
    for variant in variants.values():
        if not variant.database:
            continue
        before = db.settled([variant.database])
        result = loadgen(variant, clients=1, count=count, first_only=True)
        after = db.settled([variant.database])
        found[variant.name] = work_per_turn(before, after, idle, variant.database, result["requests"])
        found[variant.name]["calls"] = result["requests"]
        found[variant.name]["failures"] = result["failures"]
    return found


STREAM_WARMUP = 3


def first_tokens(variants: dict[str, Variant], *, count: int) -> dict[str, list[float]]:
    """Streamed calls, sequential, interleaved call by call across the variants (one socket client each, on its first
    process; the order rotating every round, 25 ms apart), after STREAM_WARMUP rounds: each call's seconds from its
    request to its first chunk with content. Every stream is read to its end."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": MESSAGE}], "stream": True,
            "stream_options": {"include_usage": True}}
    clients = {}
    for name, variant in variants.items():
        host, port = variant.targets(first_only=True).rsplit(":", 1)
        clients[name] = SseClient(host, int(port), {"Authorization": f"Bearer {variant.token or UPSTREAM_KEY}"})
    found: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    try:
        for round_ in range(STREAM_WARMUP + count):
            for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                first = None
                for seconds, _, data in clients[name].post("/v1/chat/completions", body):
                    if first is None and data.startswith("{"):
                        choices = json.loads(data).get("choices") or [{}]
                        if (choices[0].get("delta") or {}).get("content"):
                            first = seconds
                if first is None:
                    raise RuntimeError(f"{name}: a stream without content")
                if round_ >= STREAM_WARMUP:
                    found[name].append(first)
                time.sleep(0.025)
    finally:
        for client in clients.values():
            client.close()
    return found


def measure(run: BenchRun, variants: dict[str, Variant], services, clients: list[int], args) -> tuple[dict, str]:
    postgres = services.postmaster_pid()
    shared = {"postgresql": Tree(postgres), "redis": services.redis_pid} if postgres else {}
    results = {name: {"paired": [], "streamed": [], **{n: [] for n in clients}, **{f"cpu{n}": [] for n in clients}}
               for name in variants}
    profile_text = ""
    order = list(variants)
    for rep in range(args.reps):
        log(f"rep {rep + 1}/{args.reps}: {args.seq_count} sequential calls per variant, interleaved call by call")
        for name, latencies in round_robin(variants, count=args.seq_count).items():
            results[name]["paired"].append(latencies)
        if args.stream_count:
            log(f"rep {rep + 1}/{args.reps}: {args.stream_count} streamed calls per variant, interleaved call by call")
            for name, firsts in first_tokens(variants, count=args.stream_count).items():
                results[name]["streamed"].append(firsts)
        for n in clients:
            for name in order[rep % len(order):] + order[:rep % len(order)]:
                variant = variants[name]
                log(f"rep {rep + 1}/{args.reps}: {name}: {n} clients for {args.duration:.0f} s")
                meter = CpuMeter({"servers": variant.pids, **shared})
                meter.start()
                profile = None
                if args.profile and rep == 0 and name.startswith("chatter") and n == clients[0]:
                    profile = Profile(run, variant.pids[0], f"{name}-1-{n}-clients", args.duration)
                result = loadgen(variant, clients=n, duration=args.duration)
                results[name][f"cpu{n}"].append(meter.stop())
                results[name][n].append(result)
                if profile is not None:
                    profile_text += "\n" + profile.summary(focus=FOCUS, top=30)
    return results, profile_text


def calls_sent(results: dict, clients: list[int], work: dict | None) -> tuple[int, int]:
    """(calls sent, calls that failed) to one variant, warm-ups included."""
    rounds = sum(len(r["latencies"]) + 3 for r in results["paired"])  # round_robin's 3 warm-up calls
    rounds += sum(len(firsts) + STREAM_WARMUP for firsts in results["streamed"])
    sent = rounds + sum(r["requests"] for n in clients for r in results[n]) + int((work or {}).get("calls", 0))
    failed = sum(r["failures"] for r in results["paired"] + [r for n in clients for r in results[n]])
    return sent, failed + int((work or {}).get("failures", 0))


def exactness(database, sent: int, failed: int) -> list[tuple[str, bool, str]]:
    """Chatter's record of the calls: every call answered, one gateway run per call, every one completed with the
    stub's usage, I2, I3 on every run, and reconcile_aggregates' drift check."""
    chatter_calls.django_setup(database.env)
    runs = chatter_calls.gateway_runs()
    checks = [("every call answered", not failed, f"{failed} of {sent} failed"),
              ("one run per call sent", runs["runs"] == sent, f"{runs['runs']} runs for {sent} calls"),
              ("every run completed", runs["completed"] == runs["runs"], f"{runs['completed']} completed"),
              ("usage exact (the stub's, per run)",
               (runs["prompt_tokens"], runs["completion_tokens"]) == (USAGE["prompt_tokens"] * runs["runs"],
                                                                      USAGE["completion_tokens"] * runs["runs"]),
               f"{runs['prompt_tokens']} + {runs['completion_tokens']} tokens stored")]
    try:
        chatter_calls.invariant_i2()
        checks.append(("I2", True, "templates' figures = sums over their runs"))
    except AssertionError as error:
        checks.append(("I2", False, str(error)))
    broken = chatter_calls.gateway_i3_failures()
    checks.append(("I3 on every run", not broken, f"{len(broken)} runs differ from their nodes" if broken else
                   "each run's figures = the sums over its nodes"))
    drift = chatter_calls.aggregates_drift()
    checks.append(("reconcile_aggregates' drift check", not drift, f"{len(drift)} drifted" if drift else "no drift"))
    return checks


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(results: dict, variants: dict[str, Variant], work: dict, clients: list[int], args,
           statements_counted: bool) -> dict:
    paired = {name: [x for r in res["paired"] for x in r["latencies"]] for name, res in results.items()}
    floor = {q: percentile(paired["upstream"], q) for q in (50, 99)}
    print(f"\nB8: POST /v1/chat/completions (gpt-4o-mini, one user message, not streamed) through each gateway to the "
          f"same instant OpenAI stub, 2 server processes per gateway, PostgreSQL + Redis; {args.reps} interleaved "
          f"repetition(s); sequential: {args.seq_count} calls per variant per repetition, interleaved call by call; "
          f"concurrent: {', '.join(map(str, clients))} clients for {args.duration:g} s each")
    rows = []
    summary: dict[str, dict] = {}
    for name, res in results.items():
        s = summary[name] = {"p50": percentile(paired[name], 50), "p99": percentile(paired[name], 99)}
        s["added50"], s["added99"] = s["p50"] - floor[50], s["p99"] - floor[99]
        row = [name, _ms(s["p50"]), _ms(s["p99"]),
               "-" if name == "upstream" else _ms(s["added50"]), "-" if name == "upstream" else _ms(s["added99"])]
        failures = sum(r["failures"] for r in res["paired"])
        for n in clients:
            rates = [r["turns"] / r["elapsed"] for r in res[n]]
            latencies = [x for r in res[n] for x in r["latencies"]]
            cpu = median([c["servers"] for c in res[f"cpu{n}"]])
            s[n] = {"rate": median(rates), "cpu_ms": cpu / median(rates) * 1000 if median(rates) else float("nan")}
            failures += sum(r["failures"] for r in res[n])
            row += [" / ".join(f"{r:.0f}" for r in rates), _ms(percentile(latencies, 50)),
                    _ms(percentile(latencies, 99)), f"{s[n]['cpu_ms']:.1f}"]
        s["failures"] = failures
        rows.append(row + [failures])
    headers = ["variant", "seq p50 ms", "p99 ms", "added p50 ms", "added p99 ms"]
    for n in clients:
        headers += [f"{n} clients: calls/s per rep", "p50 ms", "p99 ms", "server CPU ms/call"]
    print(table(rows, headers + ["failed"]))
    for name, res in results.items():
        examples = [e for r in res["paired"] + [r for n in clients for r in res[n]] for e in r["failure_examples"]]
        if examples:
            print(f"  {name} failures, e.g.: {examples[:3]}")
    print("settings: " + "; ".join(f"{v.name}: {v.note}" for v in variants.values() if v.note))
    streamed = {name: [x for r in res["streamed"] for x in r] for name, res in results.items()}
    if streamed.get("upstream"):
        floor = {q: percentile(streamed["upstream"], q) for q in (50, 99)}
        print(f"\nStreamed (sequential, {len(streamed['upstream'])} calls per variant, interleaved), time to the "
              "first token, p50 / p99 ms (added: less the stub's):")
        for name, firsts in streamed.items():
            added = {q: percentile(firsts, q) - floor[q] for q in (50, 99)}
            summary[name].update(first50=added[50], first99=added[99])
            print(f"  {name}: {_ms(percentile(firsts, 50))} / {_ms(percentile(firsts, 99))}"
                  + ("" if name == "upstream" else f" (added {_ms(added[50])} / {_ms(added[99])})"))

    for name in [name for name in summary if name.startswith("chatter")] if "litellm" in summary else []:
        mine, peer = summary[name], summary["litellm"]
        print()
        for q, key, what in [(q, f"{kind}{q}", what) for kind, what in (("added", "added latency"),
                                                                         ("first", "added first token"))
                             for q in (50, 99) if f"{kind}{q}" in peer]:
            ratio = mine[key] / peer[key] if peer[key] > 0 else float("nan")
            print(f"{what} p{q}: {name} {_ms(mine[key])} ms vs litellm {_ms(peer[key])} ms: "
                  f"x{ratio:.2f} (target <= x{LATENCY_RATIO_TARGET:g}: "
                  f"{'met' if ratio <= LATENCY_RATIO_TARGET else 'not met'})")
        for n in clients:
            ratio = mine[n]["rate"] / peer[n]["rate"] if peer[n]["rate"] else float("nan")
            print(f"throughput at {n} clients: {name} {mine[n]['rate']:.1f} vs litellm {peer[n]['rate']:.1f} "
                  f"calls/s: x{ratio:.2f} (target >= x{THROUGHPUT_TARGET:g}: "
                  f"{'met' if ratio >= THROUGHPUT_TARGET else 'not met'}); server CPU per call "
                  f"{mine[n]['cpu_ms']:.1f} vs {peer[n]['cpu_ms']:.1f} ms")

    if work:
        print("\nDatabase work per call (sequential calls, PostgreSQL's counters for the variant's own database, less "
              "its idle background work):")
        print(table([[name, variants[name].database,
                      f"{w['statements']:.1f}" if statements_counted else "n/a",
                      f"{w['fk_checks']:.1f}" if statements_counted else "n/a", f"{w['transactions']:.1f}",
                      f"{w['sessions']:.2f}", int(w["calls"])] for name, w in work.items()],
                    ["variant", "database", "statements", "PostgreSQL's foreign-key checks", "transactions",
                     "new connections", "calls"]))
    print("\nCPU while the clients ran (median over repetitions):")
    for name, res in results.items():
        for n in clients:
            merged = {k: median([c[k] for c in res[f"cpu{n}"]]) for k in res[f"cpu{n}"][0]}
            print(f"  {name}, {n} clients: {format_cpu(merged)}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per concurrent phase (default 10)")
    parser.add_argument("--seq-count", type=int, default=200, help="sequential calls per variant per repetition")
    parser.add_argument("--stream-count", type=int, default=100, help="streamed calls per variant per repetition, "
                        "for the first token (default 100; 0: none)")
    parser.add_argument("--clients", default="8,32", help="client counts of the concurrent phases (default 8,32)")
    parser.add_argument("--servers", default="daphne,uvicorn", help="Chatter's server stacks (default "
                        "daphne,uvicorn: both, on one database)")
    parser.add_argument("--work-count", type=int, default=40, help="calls counted for statements per call")
    parser.add_argument("--litellm-db", action="store_true", help="LiteLLM with its database (needs its Prisma "
                        "engines, which it downloads at start)")
    parser.add_argument("--profile", action="store_true", help="py-spy the first Chatter process during its "
                        "first concurrent phase")
    parser.add_argument("--baseline", type=Path, help="another checkout of Chatter (e.g. main before a change, "
                        "`git worktree add`), served by 2 uvicorn processes beside the others on the same database: "
                        "before and after side by side")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",") if n]

    with BenchRun("b8") as run:
        services, db = services_counted(run)
        stub = start_stub(run)
        chatters, database = chatter_gateways(run, services, stub, [s for s in args.servers.split(",") if s],
                                              baseline=args.baseline)
        litellm = litellm_pair(run, services, stub, with_database=args.litellm_db)
        variants = {"upstream": stub, **chatters, "litellm": litellm}
        databases = sorted({v.database for v in variants.values() if v.database})
        idle = idle_work(db, databases)
        log(f"database work: {args.work_count} sequential calls per gateway with a database")
        work = database_work(db, variants, idle, args.work_count)
        results, profile_text = measure(run, variants, services, clients, args)
        report(results, variants, work, clients, args, db.statements)
        sent = failed = 0
        for name in chatters:  # (one database: its runs are all of them)
            sent_here, failed_here = calls_sent(results[name], clients, work.get(name))
            sent, failed = sent + sent_here, failed + failed_here
        print("\nChatter's record of the calls it was sent:")
        checks = exactness(database, sent, failed)
        for name, ok, detail in checks:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
        print(machine_note())
        if profile_text:
            print()
            print(profile_text)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    run_main(main)
