"""B5's servers, two processes each on free loopback ports: Chatter on daphne or uvicorn; the stock LangGraph
Agent Server on PostgreSQL + Redis (`langhost serve`, the fair peer); LangGraph's in-memory dev server
(`langgraph dev`, a reference). The LangGraph servers serve bench/b5_langgraph_graph.py from venvs of their own
under var/bench/ (git-ignored), created on first use from the requirements files beside this module: their
pins conflict with the project's (langgraph-api pins jsonschema-rs<0.45, the project's schemathesis needs
>=0.60)."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.chatter_servers import Database, bench_token, chatter_env, daphne, uvicorn
from bench.machine import process_tree
from bench.processes import BENCH_DIR, HOST, ROOT, VAR_DIR, BenchRun, free_port, log, wait_http
from bench.services import Services

PEER_DATABASE = "langgraph_peer"
PEER_REDIS_DB = 1  # the bench's Redis server, a database index of its own (Chatter uses 0)
GRAPH_FILE = BENCH_DIR / "b5_langgraph_graph.py"


@dataclass
class Venv:
    path: Path
    requirements: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> str:
        return str(self.path / "bin" / name)

    def ensure(self) -> None:
        """Create it, or reinstall when its requirements file changed since."""
        stamp = self.path / ".installed"
        if stamp.exists() and stamp.stat().st_mtime >= self.requirements.stat().st_mtime:
            return
        log(f"creating {self.path} from bench/{self.requirements.name} (pip, once)")
        base = Path(sys.base_prefix) / "bin" / "python3"
        subprocess.run([str(base), "-m", "venv", str(self.path)], check=True)
        subprocess.run([str(self.python), "-m", "pip", "install", "-q", "-r", str(self.requirements)], check=True)
        stamp.touch()


PEER_VENV = Venv(VAR_DIR / "langhost-venv", BENCH_DIR / "requirements-langhost.txt")
DEV_VENV = Venv(VAR_DIR / "langgraph-venv", BENCH_DIR / "requirements-langgraph.txt")


@dataclass
class Variant:
    """One compared server setup: the ports the load generator spreads its clients over, the pids whose CPU
    is counted, and the database whose work is counted per turn."""
    name: str
    kind: str  # the load generator's request kind: chatter | peer | langgraph
    ports: list[int]
    pids: list[int]
    token: str = ""
    database: str | None = None
    note: str = ""
    logs: list[Path] = field(default_factory=list)

    def targets(self, first_only: bool = False) -> str:
        return ",".join(f"{HOST}:{port}" for port in (self.ports[:1] if first_only else self.ports))


def chatter_pair(run: BenchRun, database: Database, server: str, *, root: Path | None = None) -> Variant:
    """Chatter (chatter_project.asgi) served by 2 daphne or 2 uvicorn processes on one database; `root`: 2 uvicorn
    processes serving another checkout (named chatter-baseline)."""
    if root is not None:
        servers = [uvicorn(run, database, label=f"baseline{i}", root=root) for i in (1, 2)]
    elif server == "daphne":
        servers = [daphne(run, database, label=f"daphne{i}") for i in (1, 2)]
    else:
        servers = [uvicorn(run, database, label=f"uvicorn{i}") for i in (1, 2)]
    database_name = database.env["DATABASE_URL"].rsplit("/", 1)[1]
    return Variant("chatter-baseline" if root is not None else f"chatter-{server}", "chatter", [s.port for s in servers], [s.pid for s in servers],
                   token=bench_token(servers[0], database), database=database_name,
                   logs=[s.log_path for s in servers])


def _graph_env(run: BenchRun, label: str, venv: Venv, token_delay_ms: int = 0) -> dict:
    """What the served graph needs: the project's settings (no database: the graph runs nothing recorded),
    the local model (answering at once unless `token_delay_ms`), the peer's venv first on PATH; LangSmith,
    analytics and the version check off (nothing leaves the machine)."""
    env = chatter_env(run, label, CHATTER_LOCAL_TOKEN_DELAY_MS=token_delay_ms)
    env.update({"LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "true",
                "PATH": f"{venv.path / 'bin'}:{env.get('PATH', '')}"})
    return env


def _langgraph_json(run: BenchRun, label: str) -> Path:
    workdir = run.tmp / label
    workdir.mkdir()
    (workdir / "langgraph.json").write_text(json.dumps({
        "dependencies": [str(ROOT)],
        "graphs": {"chat": f"{GRAPH_FILE}:graph"},
    }))
    return workdir


def peer_pair(run: BenchRun, services: Services, *, jobs_per_worker: int | None = None, processes: int = 2,
              token_delay_ms: int = 0) -> Variant:
    """The stock LangGraph Agent Server on PostgreSQL + Redis (langhost + langgraph-runtime-pg), 2 processes (or
    `processes`) on one database of its own on the bench's PostgreSQL and one Redis database, migrated first."""
    PEER_VENV.ensure()
    database_uri = services.create_database(PEER_DATABASE)
    redis_uri = services.redis_url_for(PEER_REDIS_DB)
    env = _graph_env(run, "peer", PEER_VENV, token_delay_ms)
    env.update({"DATABASE_URI": database_uri, "REDIS_URI": redis_uri})
    if jobs_per_worker is not None:
        env["N_JOBS_PER_WORKER"] = str(jobs_per_worker)
    log(f"migrating the peer's database ({PEER_DATABASE}): langgraph-runtime-pg-migrate upgrade")
    result = subprocess.run([PEER_VENV.bin("langgraph-runtime-pg-migrate"), "upgrade"], env=env, cwd=run.tmp,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"langgraph-runtime-pg-migrate upgrade failed:\n{result.stdout}\n{result.stderr}")
    ports, pids, logs = [], [], []
    for i in range(1, processes + 1):
        workdir = _langgraph_json(run, f"langhost{i}")
        port = free_port()
        log_name = f"langhost{i}-{port}.log"
        process = run.spawn([PEER_VENV.bin("langhost"), "serve", "-c", "langgraph.json", "--host", HOST, "--port",
                             str(port), "--server-log-level", "WARNING"], env=env, log_name=log_name, cwd=workdir)
        wait_http(process, port, "/ok", run.tmp / log_name, what="langhost serve")
        log(f"langhost serve (stock Agent Server, PostgreSQL + Redis) {i} on {HOST}:{port}, pid {process.pid}")
        ports.append(port)
        pids += process_tree(process.pid)
        logs.append(run.tmp / log_name)
    jobs = jobs_per_worker if jobs_per_worker is not None else "1 (langhost's default)"
    return Variant("langgraph-pg", "peer", ports, pids, database=PEER_DATABASE, logs=logs,
                   note=f"N_JOBS_PER_WORKER {jobs}")


def dev_pair(run: BenchRun) -> Variant:
    """`langgraph dev` (in-memory Agent Server, persists nothing), 2 processes, as a reference."""
    DEV_VENV.ensure()
    env = _graph_env(run, "dev", DEV_VENV)
    ports, pids, logs = [], [], []
    for i in (1, 2):
        workdir = _langgraph_json(run, f"langgraph-dev{i}")
        port = free_port()
        log_name = f"langgraph-dev{i}-{port}.log"
        process = run.spawn([DEV_VENV.bin("langgraph"), "dev", "--no-browser", "--no-reload", "--allow-blocking",
                             "--host", HOST, "--port", str(port), "--server-log-level", "WARNING", "--config",
                             "langgraph.json"], env=env, log_name=log_name, cwd=workdir)
        wait_http(process, port, "/ok", run.tmp / log_name, what="langgraph dev")
        log(f"langgraph dev {i} on {HOST}:{port}, pid {process.pid}")
        ports.append(port)
        pids += process_tree(process.pid)
        logs.append(run.tmp / log_name)
    return Variant("langgraph-dev", "langgraph", ports, pids, logs=logs)


def bare_engine_floor(run: BenchRun) -> str:
    """The served graph in process (bench/b5_langgraph_graph.py's own measurement), in the peer's venv."""
    venv = PEER_VENV if PEER_VENV.python.exists() else DEV_VENV
    if not venv.python.exists():
        return "(no LangGraph venv: not measured)"
    result = subprocess.run([str(venv.python), "-m", "bench.b5_langgraph_graph"], cwd=ROOT, capture_output=True,
                            text=True, check=False, env=_graph_env(run, "floor", venv))
    return "\n".join(line for line in result.stdout.splitlines() if "median" in line) or result.stderr[-500:]
