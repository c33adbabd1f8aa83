"""B5 (SPEC §13): sync chat turns per second over HTTP, 2 server processes, PostgreSQL + Redis, 8 clients, and
sequential turn latency; target: at least LangGraph's own server on the same graph, side by side, and a
sequential median of at most 20 ms.

Side by side in one run, interleaved (rotating order each repetition), on one machine:
- chatter-daphne:  2 daphne processes serving Chatter (chatter_project.asgi) on one PostgreSQL + Redis
                   (scripts/services.sh), `POST /api/v1/chat/ {"message": "hello there"}`: a sync turn of
                   universal_chat with the local model, everything persisted (conversation, both messages,
                   execution, nodes, LLM call, events, aggregates, audit), answered 201;
- chatter-uvicorn: the same app and database served by 2 uvicorn processes (httptools, uvloop);
- langgraph:       LangGraph's own Agent Server, in-memory form (`langgraph dev`, as SPEC §13 describes it),
                   2 processes, `POST /runs/wait` (a stateless run) of a graph whose one node runs Chatter's
                   compiled universal_chat graph with the same local model and no recording
                   (bench/b5_langgraph_graph.py). It lives in its own venv (bench/requirements-langgraph.txt),
                   created on first use.
Every server has the local model with CHATTER_LOCAL_TOKEN_DELAY_MS=0, so the model answers at once.

Load comes from a separate process, bench/b5_loadgen.py (asyncio, HTTP/1.1 keep-alive, one connection per client,
client i on server process i % 2): a sequential phase (1 client, --seq-count turns, on the first process) and a
concurrent phase (8 clients for --duration s). Each phase starts after warm-up turns.

    .venv/bin/python bench/b5_http_turns.py [--reps 2] [--duration 10] [--seq-count 40] [--clients 8]
                                            [--variants chatter-daphne,chatter-uvicorn,langgraph] [--profile]

Also printed: the bare engine's time per turn in-process (the floor), database work per turn (transactions and
new connections from pg_stat_database, queries from Django's own counter), CPU per process while loaded, and
with --profile a py-spy summary of one Chatter server process under the 8 clients.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH_DIR,
    HOST,
    PYTHON,
    ROOT,
    BenchRun,
    CpuMeter,
    PgActivity,
    Profile,
    api_token,
    django_setup,
    format_cpu,
    format_pg_activity,
    free_port,
    log,
    machine_note,
    median,
    percentile,
    process_tree,
    table,
)

LANGGRAPH_VENV = ROOT / "var" / "bench" / "langgraph-venv"
LANGGRAPH_PY = LANGGRAPH_VENV / "bin" / "python"
VARIANTS = ("chatter-daphne", "chatter-uvicorn", "langgraph")
FOCUS = ("workflows/", "conversations/", "analytics/", "audit/", "chatter_project/", "django/db/", "psycopg/",
         "rest_framework/", "django/core/handlers", "asgiref/", "daphne/", "langgraph/", "langchain_core/")


def ensure_langgraph_venv() -> None:
    """LangGraph's server cannot share .venv (langgraph-api pins jsonschema-rs<0.45, schemathesis needs >=0.60)."""
    stamp = LANGGRAPH_VENV / ".installed"
    requirements = BENCH_DIR / "requirements-langgraph.txt"
    if stamp.exists() and stamp.stat().st_mtime >= requirements.stat().st_mtime:
        return
    log(f"creating {LANGGRAPH_VENV} from {requirements.name} (once)")
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", str(LANGGRAPH_VENV)], check=True)
    subprocess.run([str(LANGGRAPH_PY), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
    stamp.touch()


class Variant:
    def __init__(self, name: str, ports: list[int], pids: list[int], token: str = ""):
        self.name, self.ports, self.pids, self.token = name, ports, pids, token

    @property
    def kind(self) -> str:
        return "langgraph" if self.name == "langgraph" else "chatter"

    def targets(self, first_only: bool = False) -> str:
        ports = self.ports[:1] if first_only else self.ports
        return ",".join(f"{HOST}:{port}" for port in ports)


def wait_http(port: int, path: str, process: subprocess.Popen, log_path: Path, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://{HOST}:{port}{path}", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not answer {path}:\n{log_path.read_text()[-3000:]}")


def start_uvicorn(run: BenchRun, database, label: str) -> tuple[int, subprocess.Popen]:
    port = free_port()
    process = run.spawn([PYTHON, "-m", "uvicorn", "chatter_project.asgi:application", "--host", HOST, "--port",
                         str(port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"],
                        env=database.env, log_name=f"uvicorn-{label}-{port}.log")
    wait_http(port, "/api/v1/auth/token/", process, run.tmp / f"uvicorn-{label}-{port}.log")
    log(f"uvicorn ({label}) on {HOST}:{port}, pid {process.pid}")
    return port, process


def start_langgraph(run: BenchRun, label: str) -> tuple[int, subprocess.Popen]:
    """`langgraph dev` (in-memory Agent Server) serving bench/b5_langgraph_graph.py as `chat`, in its own dir."""
    port = free_port()
    workdir = run.tmp / f"langgraph-{label}"
    workdir.mkdir()
    (workdir / "langgraph.json").write_text(json.dumps({
        "dependencies": [str(ROOT)],
        "graphs": {"chat": f"{BENCH_DIR / 'b5_langgraph_graph.py'}:graph"},
    }))
    env = run.base_env(f"langgraph-{label}", CHATTER_LOCAL_TOKEN_DELAY_MS=0, LANGSMITH_TRACING="false",
                       LANGGRAPH_NO_VERSION_CHECK="true", LANGGRAPH_CLI_NO_ANALYTICS="1")
    env["PATH"] = f"{LANGGRAPH_VENV / 'bin'}:{env.get('PATH', '')}"
    log_name = f"langgraph-{label}-{port}.log"
    process = subprocess.Popen(
        [str(LANGGRAPH_VENV / "bin" / "langgraph"), "dev", "--no-browser", "--no-reload", "--allow-blocking",
         "--host", HOST, "--port", str(port), "--server-log-level", "WARNING", "--config",
         str(workdir / "langgraph.json")],
        cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=(run.tmp / log_name).open("w"),
        stderr=subprocess.STDOUT, start_new_session=True, text=True,
    )
    run.processes.append(process)
    wait_http(port, "/ok", process, run.tmp / log_name)
    log(f"langgraph dev ({label}) on {HOST}:{port}, pid {process.pid}")
    return port, process


def loadgen(variant: Variant, *, clients: int, duration: float = 0, count: int = 0, first_only: bool = False,
            warmup: int = 3) -> dict:
    args = [PYTHON, str(BENCH_DIR / "b5_loadgen.py"), "--kind", variant.kind, "--targets",
            variant.targets(first_only), "--token", variant.token, "--clients", str(clients), "--warmup", str(warmup)]
    args += ["--duration", str(duration)] if duration else ["--count", str(count)]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def pg_counters(url: str) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
        connection.execute("SELECT pg_stat_clear_snapshot()")
        open_now = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                                      "AND pid <> pg_backend_pid()").fetchone()[0]
    return {"commits": row[0], "sessions": row[1], "open": open_now}


def postmaster_pid(services_dir: Path) -> int | None:
    try:
        pgroot = Path((services_dir / "pgroot").read_text().strip())
        return int((pgroot / "data" / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def queries_per_turn(database) -> str:
    """One sync chat turn through the services the view calls, in this process: Django's query count."""
    django_setup(database)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workflows.services import execution_create, execution_run

    user = get_user_model().objects.get(username="bench")
    counts = []
    for _ in range(3):
        with CaptureQueriesContext(connection) as captured:
            execution = execution_create(owner=user, chat=True, mode="sync", message="hello there", config={})
            execution_run(execution_id=execution.pk)
        counts.append(len(captured.captured_queries))
    connection.close()
    return f"{counts[-1]} queries per sync chat turn through the services (no HTTP), new conversation each turn"


def bare_engine() -> str:
    """The bare engine's time per turn (the floor) and the wrapper's cost, in the peer's venv."""
    python = LANGGRAPH_PY if LANGGRAPH_PY.exists() else PYTHON
    result = subprocess.run([str(python), str(BENCH_DIR / "b5_langgraph_graph.py")], cwd=ROOT, capture_output=True,
                            text=True, check=False, env={**os.environ, "CHATTER_LOCAL_TOKEN_DELAY_MS": "0"})
    return "\n".join(line for line in result.stdout.splitlines() if "median" in line) or result.stderr[-500:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10, help="seconds of the 8-client phase")
    parser.add_argument("--seq-count", type=int, default=40, help="turns of the sequential phase")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--profile", choices=("seq", "conc"), help="py-spy the first chatter-daphne process during "
                        "its sequential (seq) or 8-client (conc) phase of the first repetition")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    if "chatter-uvicorn" in names and subprocess.run([PYTHON, "-c", "import uvicorn, uvloop, httptools"],
                                                     capture_output=True, check=False).returncode:
        log("uvicorn is not in .venv (.venv/bin/pip install -r bench/requirements.txt): skipping chatter-uvicorn")
        names.remove("chatter-uvicorn")
    if "langgraph" in names:
        ensure_langgraph_venv()

    with BenchRun("b5") as run:
        services = run.services()
        database = run.database("postgres", DATABASE_URL=services["DATABASE_URL"], REDIS_URL=services["REDIS_URL"],
                                CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        variants: dict[str, Variant] = {}
        token = ""
        if "chatter-daphne" in names:
            servers = [run.daphne(database, label=f"daphne{i}") for i in (1, 2)]
            token = api_token(servers[0], database)
            variants["chatter-daphne"] = Variant("chatter-daphne", [s.port for s in servers],
                                                 [s.process.pid for s in servers], token)
        if "chatter-uvicorn" in names:
            started = [start_uvicorn(run, database, f"uvicorn{i}") for i in (1, 2)]
            if not token:
                import httpx

                token = httpx.post(f"http://{HOST}:{started[0][0]}/api/v1/auth/token/", timeout=10, json={
                    "username": "bench", "password": database.password}).json()["token"]
            variants["chatter-uvicorn"] = Variant("chatter-uvicorn", [p for p, _ in started],
                                                  [p.pid for _, p in started], token)
        if "langgraph" in names:
            started = [start_langgraph(run, f"lg{i}") for i in (1, 2)]
            variants["langgraph"] = Variant("langgraph", [p for p, _ in started],
                                            [pid for _, p in started for pid in process_tree(p.pid)])
        postgres = postmaster_pid(run.services_dir)
        shared = {"postgresql": postgres, "redis": services["redis_pid"]} if postgres else {}

        results: dict[str, dict[str, list]] = {name: {"seq": [], "conc": [], "cpu": [], "pg": []}
                                               for name in variants}
        db_work: dict[str, list] = {name: [] for name in variants if name != "langgraph"}
        profile_text = ""
        order = list(variants)
        for rep in range(args.reps):
            rotated = order[rep % len(order):] + order[:rep % len(order)]
            for name in rotated:
                variant = variants[name]
                log(f"rep {rep + 1}/{args.reps}: {name}: {args.seq_count} sequential turns")
                before = pg_counters(services["DATABASE_URL"])
                profile = None
                if args.profile == "seq" and rep == 0 and name == "chatter-daphne":
                    profile = Profile(run, variant.pids[0], "chatter-daphne-1-sequential", args.seq_count * 0.08)
                seq = loadgen(variant, clients=1, count=args.seq_count, first_only=True)
                if profile is not None:
                    profile_text = profile.summary(focus=FOCUS, top=25)
                after = pg_counters(services["DATABASE_URL"])
                if name in db_work:
                    turns = seq["turns"] + 3  # the warm-up turns ran inside the counters' window too
                    db_work[name].append({**{k: (after[k] - before[k]) / turns for k in ("commits", "sessions")},
                                          "open_before": before["open"], "open_after": after["open"],
                                          "turns": turns})
                results[name]["seq"].append(seq)
                log(f"rep {rep + 1}/{args.reps}: {name}: {args.clients} clients for {args.duration:.0f} s")
                if name == "langgraph":
                    pids = {f"{name} servers (both, all processes)": variant.pids, **shared}
                else:
                    pids = {**{f"{name} server {i + 1}": pid for i, pid in enumerate(variant.pids)}, **shared}
                meter = CpuMeter(_with_children(pids))
                meter.start()
                profile = None
                if args.profile == "conc" and rep == 0 and name == "chatter-daphne":
                    profile = Profile(run, variant.pids[0], "chatter-daphne-1", args.duration)
                activity = PgActivity(services["DATABASE_URL"]).start()
                conc = loadgen(variant, clients=args.clients, duration=args.duration)
                results[name]["cpu"].append(meter.stop())
                results[name]["pg"].append(activity.stop())
                results[name]["conc"].append(conc)
                if profile is not None:
                    profile_text = profile.summary(focus=FOCUS, top=25)
        report(results, db_work, args)
        print()
        print("Bare engine in process (Chatter's compiled universal_chat + local model, no recording; the floor):")
        print(bare_engine())
        if "chatter-daphne" in variants or "chatter-uvicorn" in variants:
            print(queries_per_turn(database))
        print(machine_note())
        if profile_text:
            print()
            print(profile_text)
    return 0


def _with_children(pids: dict) -> dict:
    """PostgreSQL forks a backend per connection: count the postmaster and its live children."""
    out = {}
    for name, pid in pids.items():
        if isinstance(pid, list):
            out[name] = pid
        elif name == "postgresql":
            out[name] = ("tree", pid)
        else:
            out[name] = pid
    return out


def report(results: dict, db_work: dict, args) -> None:
    print(f"\nB5: sync chat turns over HTTP, 2 server processes each, PostgreSQL + Redis; load from a separate "
          f"process; message 'hello there' (no tool call); {args.reps} interleaved repetitions")
    rows = []
    summary = {}
    for name, res in results.items():
        seq = [x for r in res["seq"] for x in r["latencies"]]
        conc = [x for r in res["conc"] for x in r["latencies"]]
        rates = [r["turns"] / r["elapsed"] for r in res["conc"]]
        failures = sum(r["failures"] for r in res["seq"] + res["conc"])
        summary[name] = {"seq": median(seq), "rate": median(rates)}
        rows.append([name, f"{median(seq) * 1000:.1f}", f"{percentile(seq, 95) * 1000:.1f}",
                     " / ".join(f"{r:.1f}" for r in rates), f"{median(rates):.1f}",
                     f"{median(conc) * 1000:.1f}", f"{percentile(conc, 95) * 1000:.1f}", failures])
    print(table(rows, ["variant", "seq median ms", "seq p95 ms", f"{args.clients} clients turns/s per rep",
                       "turns/s (median)", "latency median ms", "p95 ms", "failed"]))
    if "langgraph" in summary:
        peer = summary["langgraph"]
        for name in summary:
            if name == "langgraph":
                continue
            mine = summary[name]
            print(f"{name} vs langgraph: throughput x{mine['rate'] / peer['rate']:.2f} "
                  f"({mine['rate']:.1f} vs {peer['rate']:.1f} turns/s); sequential median "
                  f"{mine['seq'] * 1000:.1f} vs {peer['seq'] * 1000:.1f} ms (x{peer['seq'] / mine['seq']:.1f} faster)")
    for name in summary:
        if name != "langgraph":
            verdict = "meets" if summary[name]["seq"] <= 0.020 else "misses"
            print(f"{name}: sequential median {summary[name]['seq'] * 1000:.1f} ms {verdict} the 20 ms target")
    print("\nCPU while the clients ran (median over reps):")
    for name, res in results.items():
        keys = res["cpu"][0].keys()
        merged = {k: median([c[k] for c in res["cpu"]]) for k in keys}
        loadgen_cpu = median([r["loadgen_cpu_share"] for r in res["conc"]])
        print(f"  {name}: {format_cpu({**merged, 'load generator': loadgen_cpu})}")
    print("\nPostgreSQL while the clients ran (first repetition):")
    for name, res in results.items():
        if name != "langgraph":
            print(f"  {name}: {format_pg_activity(res['pg'][0])}")
    for name, works in db_work.items():
        if works:
            opened = ", ".join(f"{w['open_before']} -> {w['open_after']}" for w in works)
            print(f"PostgreSQL per sequential turn ({name}): {median([w['commits'] for w in works]):.1f} "
                  f"transactions committed, {median([w['sessions'] for w in works]):.2f} new connections; client "
                  f"connections open before -> after each sequential phase of {works[0]['turns']} turns: {opened}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        sys.exit(130)
