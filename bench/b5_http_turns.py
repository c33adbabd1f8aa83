"""B5: sync chat turns per second over HTTP, 2 server processes, PostgreSQL + Redis, 8 clients, and
sequential turn latency, side by side with the stock LangGraph Agent Server on PostgreSQL + Redis serving the
same graph. Target: at least 2x the peer's throughput; a sequential median of at most 20 ms and at most half
the peer's.

Side by side in one run, interleaved (the order rotates every repetition), every server with 2 processes on
free loopback ports, the `local` model answering at once (CHATTER_LOCAL_TOKEN_DELAY_MS=0):
- chatter-daphne:  Chatter on 2 daphne processes, one PostgreSQL + Redis (scripts/services.sh);
                   `POST /api/v1/chat/ {"message": "hello there"}`: a sync turn of universal_chat, everything
                   persisted (conversation, both messages, execution, nodes, LLM call, events, aggregates, audit);
- chatter-uvicorn: the same app and database on 2 uvicorn processes (httptools, uvloop: bench/requirements.txt,
                   installed under var/bench/tools when missing);
- langgraph-pg:    the fair peer: the stock Agent Server (`langhost serve`, langgraph-api on langgraph-runtime-pg)
                   on a database of its own on the same PostgreSQL and a Redis database of its own, migrated
                   with `langgraph-runtime-pg-migrate upgrade`; `POST /runs/wait` with a new thread kept each
                   turn (runs, threads and checkpoints persisted). Its venv, var/bench/langhost-venv, is made
                   from bench/requirements-langhost.txt when missing (needs PyPI once);
- langgraph-dev:   a reference: `langgraph dev`, the in-memory dev server (persists nothing), var/bench/langgraph-venv
                   from bench/requirements-langgraph.txt.
The LangGraph servers serve bench/b5_langgraph_graph.py: Chatter's compiled universal_chat graph, same model.

Load comes from a separate process (bench/b5_loadgen.py, asyncio, HTTP/1.1 keep-alive, one connection per
client, client i on process i % 2): per variant, a sequential phase (1 client, --seq-count turns, on the first
process) and a concurrent phase (--clients clients for --duration s), each after warm-up turns; then, in each
repetition, the sequential turns interleaved (one client per variant, one turn to each variant per round, the
order rotating every round, each turn 25 ms after the previous one so that no server's after-work lands on
another's turn; langgraph-dev, whose turns take about a second, is left out): every variant's sequential turns
are taken in the same seconds, and the sequential ratio to the peer is read from these.

Database work per HTTP turn, in the first sequential phase, from PostgreSQL's own counters for the variant's database
(bench/pg_stats.py): transactions (pg_stat_database xact_commit + xact_rollback), statements (pg_stat_statements
calls, transaction control left out; PostgreSQL is restarted with it preloaded), new connections.

    .venv/bin/python -m bench.b5_http_turns [--reps 2] [--duration 10] [--seq-count 40] [--clients 8]
        [--variants chatter-daphne,chatter-uvicorn,langgraph-pg,langgraph-dev] [--peer-jobs N] [--profile seq|conc]
"""
from __future__ import annotations

import argparse
import json
import subprocess

from bench.b5_report import report
from bench.b5_servers import Variant, bare_engine_floor, chatter_pair, dev_pair, peer_pair
from bench.chatter_servers import chatter_database, uvicorn_env
from bench.machine import CpuMeter, Tree, machine_note
from bench.pg_stats import DbWork, PgActivity, services_counted, work_per_turn
from bench.processes import PYTHON, ROOT, BenchRun, log, run_main
from bench.pyspy import Profile

VARIANTS = ("chatter-daphne", "chatter-uvicorn", "langgraph-pg", "langgraph-dev")
FOCUS = ("workflows/", "conversations/", "analytics/", "audit/", "chatter_project/", "django/db/", "psycopg/",
         "rest_framework/", "django/core/handlers", "asgiref/", "daphne/", "langgraph/", "langchain_core/")


def loadgen(variant: Variant, *, clients: int, duration: float = 0, count: int = 0, first_only: bool = False,
            warmup: int = 3) -> dict:
    args = [PYTHON, "-m", "bench.b5_loadgen", "--kind", variant.kind, "--targets", variant.targets(first_only),
            f"--token={variant.token}", "--clients", str(clients), "--warmup", str(warmup)]  # (a key may start with -)
    args += ["--duration", str(duration)] if duration else ["--count", str(count)]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed against {variant.name}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def round_robin(variants: dict[str, Variant], *, count: int, warmup: int = 3) -> dict:
    """Sequential turns interleaved turn by turn across the variants (one client each, on its first process), each
    turn 25 ms after the previous one (bench.b5_loadgen.round_robin)."""
    servers = [{"name": v.name, "kind": v.kind, "target": v.targets(first_only=True), "token": v.token}
               for v in variants.values()]
    args = [PYTHON, "-m", "bench.b5_loadgen", "--round-robin", json.dumps(servers), "--count", str(count),
            "--warmup", str(warmup)]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed (round robin):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["round_robin"]


def idle_work(db: DbWork, databases: list[str], seconds: float = 10) -> dict[str, dict[str, float]]:
    """What each database does per second with no request in flight (the servers' own background work)."""
    if not databases:
        return {}
    (t0, before), (t1, after) = db.settled(databases), db.settled(databases, wait=seconds)
    return {d: {k: (after[d][k] - before[d][k]) / (t1 - t0) for k in after[d]} for d in databases}


def start_variants(run: BenchRun, names: list[str], services, database, args) -> dict[str, Variant]:
    variants: dict[str, Variant] = {}
    for name in names:
        if name == "chatter-daphne":
            variants[name] = chatter_pair(run, database, "daphne")
        elif name == "chatter-uvicorn":
            variants[name] = chatter_pair(run, database, "uvicorn")
        elif name == "langgraph-pg":
            variants[name] = peer_pair(run, services, jobs_per_worker=args.peer_jobs)
        elif name == "langgraph-dev":
            variants[name] = dev_pair(run)
    return variants


def measure(run: BenchRun, variants: dict[str, Variant], services, db: DbWork, idle: dict, args) -> tuple[dict, str]:
    """The interleaved repetitions: per variant, a sequential phase (in the first repetition, with the database
    work it caused, less the servers' idle background work: a turn's statements do not vary, and waiting for
    PostgreSQL's counters costs 20 s) and a concurrent one (with CPU per process and PostgreSQL activity)."""
    results = {name: {"seq": [], "conc": [], "cpu": [], "pg": [], "work": [], "paired": []} for name in variants}
    databases = sorted({v.database for v in variants.values() if v.database})
    postgres = services.postmaster_pid()
    shared = {"postgresql": Tree(postgres), "redis": services.redis_pid} if postgres else {}
    profile_text = ""
    order = list(variants)
    for rep in range(args.reps):
        for name in order[rep % len(order):] + order[:rep % len(order)]:
            variant = variants[name]
            log(f"rep {rep + 1}/{args.reps}: {name}: {args.seq_count} sequential turns")
            before = db.settled(databases) if variant.database and rep == 0 else None
            profile = None
            if args.profile == "seq" and rep == 0 and name == "chatter-daphne":
                profile = Profile(run, variant.pids[0], "chatter-daphne-1-sequential", args.seq_count * 0.08)
            seq = loadgen(variant, clients=1, count=args.seq_count, first_only=True)
            if profile is not None:
                profile_text = profile.summary(focus=FOCUS, top=25)
            if before is not None:
                # The warm-up turns ran inside the counters' window too.
                results[name]["work"].append(work_per_turn(before, db.settled(databases), idle, variant.database,
                                                           seq["requests"]))
            results[name]["seq"].append(seq)

            log(f"rep {rep + 1}/{args.reps}: {name}: {args.clients} clients for {args.duration:.0f} s")
            pids = {f"{name} servers (both)": variant.pids, **shared}
            meter = CpuMeter(pids)
            meter.start()
            profile = None
            if args.profile == "conc" and rep == 0 and name == "chatter-daphne":
                profile = Profile(run, variant.pids[0], "chatter-daphne-1", args.duration)
            activity = None
            if variant.database:
                activity = PgActivity(services.database_url_for(variant.database)).start()
            conc = loadgen(variant, clients=args.clients, duration=args.duration)
            results[name]["cpu"].append(meter.stop())
            results[name]["conc"].append(conc)
            if activity is not None:
                results[name]["pg"].append(activity.stop())
            if profile is not None:
                profile_text = profile.summary(focus=FOCUS, top=25)
        # The in-memory reference answers a run in about a second (its queue's poll): it would stretch every round.
        paired = {name: variant for name, variant in variants.items() if name != "langgraph-dev"}
        if len(paired) > 1:
            log(f"rep {rep + 1}/{args.reps}: {args.seq_count} sequential turns per variant, interleaved turn by turn")
            for name, latencies in round_robin(paired, count=args.seq_count).items():
                results[name]["paired"].append(latencies)
    return results, profile_text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of the concurrent phase (default 10)")
    parser.add_argument("--seq-count", type=int, default=40, help="turns of the sequential phase (default 40)")
    parser.add_argument("--clients", type=int, default=8, help="clients of the concurrent phase (default 8)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--peer-jobs", type=int, default=None,
                        help="N_JOBS_PER_WORKER for langgraph-pg (default: langhost's own default)")
    parser.add_argument("--profile", choices=("seq", "conc"), help="py-spy the first chatter-daphne process during "
                        "its sequential (seq) or concurrent (conc) phase of the first repetition")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")

    with BenchRun("b5") as run:
        services, db = services_counted(run)
        database = chatter_database(run, "postgres", DATABASE_URL=services.database_url, REDIS_URL=services.redis_url,
                                    CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        if "chatter-uvicorn" in names and uvicorn_env(database) is None:
            log("uvicorn is not available (bench/requirements.txt, var/bench/tools): skipping chatter-uvicorn")
            names.remove("chatter-uvicorn")
        variants = start_variants(run, names, services, database, args)
        idle = idle_work(db, sorted({v.database for v in variants.values() if v.database}))
        results, profile_text = measure(run, variants, services, db, idle, args)
        report(results, variants, idle, args, statements_counted=db.statements)
        print()
        print("Bare engine in process (Chatter's compiled universal_chat + local model, no recording; the floor):")
        print(bare_engine_floor(run))
        print(machine_note())
        if profile_text:
            print()
            print(profile_text)
    return 0


if __name__ == "__main__":
    run_main(main)
