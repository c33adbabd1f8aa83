"""What every benchmark here needs: throwaway services, a fresh migrated database with one user, daphne on a
free loopback port, an API token, statistics and per-process CPU time.

`BenchRun` owns everything a benchmark starts and stops it all on the way out, also on an error, Ctrl-C or
SIGTERM; children get SIGTERM from the kernel if the benchmark itself is killed (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
HOST = "127.0.0.1"
USERNAME = "bench"
# Settings the caller's shell may carry that would point a benchmark at something it did not start.
_FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "CHATTER_", "DJANGO_SETTINGS_MODULE", "PYTEST")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"


@dataclass
class Database:
    env: dict          # the environment a server or publisher process needs for this database
    user_id: int
    password: str
    label: str


class BenchRun:
    """Context manager: a temp dir, and everything started inside it, stopped on exit."""

    def __init__(self, name: str):
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"chatter-bench-{name}-"))
        self.processes: list[subprocess.Popen] = []
        self.services_dir: Path | None = None
        self._previous_sigterm = None

    # --- lifecycle --------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        def on_sigterm(signum, frame):
            raise KeyboardInterrupt("SIGTERM")

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        # Ctrl-C during the clean-up must not leave things behind: ignore it until done.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in reversed(self.processes):
                self.stop(process)
            if self.services_dir is not None:
                subprocess.run([str(ROOT / "scripts" / "services.sh"), "stop", str(self.services_dir)],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            if os.environ.get("BENCH_KEEP_TMP") == "1":
                log(f"kept {self.tmp} (server and publisher logs) because BENCH_KEEP_TMP=1")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)

    def stop(self, process: subprocess.Popen, timeout: float = 10) -> None:
        """SIGTERM to the process (its own session), SIGKILL to its group after `timeout`."""
        if process.poll() is None:
            try:
                process.terminate()
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        if process in self.processes:
            self.processes.remove(process)

    def spawn(self, args: list[str], *, env: dict, log_name: str, stdin=subprocess.DEVNULL,
              stdout=None) -> subprocess.Popen:
        log_path = self.tmp / log_name
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=stdin,
            stdout=stdout if stdout is not None else log_path.open("w"),
            stderr=log_path.open("w") if stdout is not None else subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches only us; we stop children in order
            preexec_fn=_die_with_parent, text=True,  # noqa: PLW1509 - we spawn before any thread matters
        )
        self.processes.append(process)
        return process

    # --- services and databases ---------------------------------------------------------------------------
    def services(self) -> dict:
        """PostgreSQL + Redis from scripts/services.sh, stopped on exit: {"DATABASE_URL", "REDIS_URL", "redis_pid"}."""
        self.services_dir = self.tmp / "services"
        log("starting PostgreSQL + Redis (scripts/services.sh)")
        result = subprocess.run([str(ROOT / "scripts" / "services.sh"), "start", str(self.services_dir)],
                                cwd=ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/services.sh start failed:\n{result.stderr}")
        found = {}
        for line in (self.services_dir / "env").read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            found[key] = value
        found["redis_pid"] = int((self.services_dir / "redis.pid").read_text().strip())
        return found

    def base_env(self, label: str, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
        var_dir = self.tmp / f"var-{label}"
        var_dir.mkdir(exist_ok=True)
        env.update({
            "DJANGO_SETTINGS_MODULE": "chatter_project.settings",
            "SECRET_KEY": "bench-" + secrets.token_hex(16),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CHATTER_VAR_DIR": str(var_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
            # The default 120/min would turn a benchmark's sequential turns into 429s.
            "CHATTER_RUN_THROTTLE": "100000/min",
        })
        env.update({k: str(v) for k, v in extra.items() if v is not None})
        return env

    def database(self, label: str, **extra_env) -> Database:
        """A fresh database (SQLite in its own var dir unless DATABASE_URL is given), migrated and seeded,
        with one user."""
        env = self.base_env(label, **extra_env)
        log(f"migrating a fresh {label} database")
        for args in (["manage.py", "migrate", "--noinput", "-v0"], ["manage.py", "seed"]):
            result = subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        password = secrets.token_urlsafe(18)
        create_user = (
            "import django, sys; django.setup()\n"
            "from django.contrib.auth import get_user_model\n"
            f"user = get_user_model().objects.create_user({USERNAME!r}, password=sys.stdin.read())\n"
            "print(user.pk)\n"
        )
        result = subprocess.run([PYTHON, "-c", create_user], cwd=ROOT, env=env, input=password,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"creating the user failed:\n{result.stderr}")
        return Database(env=env, user_id=int(result.stdout.strip().splitlines()[-1]), password=password, label=label)

    # --- servers ----------------------------------------------------------------------------------------------
    def daphne(self, database: Database, *, app: str = "chatter_project.asgi:application", label: str | None = None,
               **extra_env) -> Server:
        port = free_port()
        env = {**database.env, **{k: str(v) for k, v in extra_env.items()}}
        for key in [k for k, v in extra_env.items() if v is None]:
            env.pop(key, None)
        label = label or database.label
        process = self.spawn([PYTHON, "-m", "daphne", "-b", HOST, "-p", str(port), app],
                             env=env, log_name=f"daphne-{label}-{port}.log")
        log_path = self.tmp / f"daphne-{label}-{port}.log"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{log_path.read_text()}")
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start:\n{log_path.read_text()}") from None
                time.sleep(0.05)
        log(f"daphne ({label}) on {HOST}:{port}, pid {process.pid}")
        return Server(process=process, port=port, log_path=log_path, env=env)

    def postgres_max_connections(self, n: int) -> None:
        """Restart this run's PostgreSQL (from services()) with max_connections = n (scripts/services.sh starts it
        with 200). Needs root, as services.sh does: the server runs as the postgres user."""
        pgroot = Path((self.services_dir / "pgroot").read_text().strip())
        opts = pgroot / "data" / "postmaster.opts"
        text = opts.read_text()
        if "max_connections=" not in text:
            raise RuntimeError(f"unexpected {opts}: {text}")
        import re

        opts.write_text(re.sub(r"max_connections=\d+", f"max_connections={n}", text))
        bindir = Path(text.split()[0].strip('"')).parent
        log(f"restarting PostgreSQL with max_connections={n}")
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(pgroot / "data"),
                        "-m", "fast", "-w", "-t", "60", "restart"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def qcluster(self, database: Database, *, label: str = "worker", **extra_env) -> subprocess.Popen:
        """A django-q2 worker (`manage.py qcluster`) on `database`; it takes tasks once it is up (a few s)."""
        env = {**database.env, **{k: str(v) for k, v in extra_env.items()}}
        process = self.spawn([PYTHON, "manage.py", "qcluster"], env=env, log_name=f"qcluster-{label}.log")
        log(f"qcluster ({label}), pid {process.pid}")
        return process

    def user(self, server: Server, database: Database, username: str) -> str:
        """One more user with a fresh password on `database`; returns its API token."""
        import httpx

        password = secrets.token_urlsafe(18)
        create_user = (
            "import django, sys; django.setup()\n"
            "from django.contrib.auth import get_user_model\n"
            f"get_user_model().objects.create_user({username!r}, password=sys.stdin.read())\n"
        )
        result = subprocess.run([PYTHON, "-c", create_user], cwd=ROOT, env=database.env, input=password,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"creating user {username} failed:\n{result.stderr}")
        response = httpx.post(f"{server.base_url}/api/v1/auth/token/", json={"username": username,
                              "password": password}, timeout=10)
        response.raise_for_status()
        return response.json()["token"]


def django_setup(database: Database) -> None:
    """Set Django up in this process on `database` (the same settings its servers use), for direct checks."""
    os.environ.update({k: v for k, v in database.env.items() if k != "PYTHONPATH"})
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def api_token(server: Server, database: Database) -> str:
    """POST /api/v1/auth/token/ with the bench user's credentials."""
    import httpx

    response = httpx.post(f"{server.base_url}/api/v1/auth/token/", json={"username": USERNAME,
                          "password": database.password}, timeout=10)
    response.raise_for_status()
    return response.json()["token"]


# --- statistics ---------------------------------------------------------------------------------------------
def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values) -> float:
    return percentile(values, 50)


def table(rows: list[list], header: list[str]) -> str:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- CPU accounting ---------------------------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of its live descendants, and of the children it has reaped (cutime + cstime):
    what a forking server (PostgreSQL: a backend per connection) used, including backends that exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    total = sum(int(f) for f in fields[11:15]) / _TICKS  # utime, stime, cutime, cstime
    for child in process_tree(pid)[1:]:
        seconds = cpu_seconds(child)
        if not math.isnan(seconds):  # a backend that exited meanwhile is in cutime instead
            total += seconds
    return total


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants now (e.g. a qcluster's worker processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


class CpuMeter:
    """CPU used by named processes between start() and stop(), as a share of one core; plus what every other
    process on the machine used meanwhile ("others": the machine is shared, so say how busy it was)."""

    def __init__(self, pids: dict[str, int | list[int] | tuple[str, int]]):
        # A name may stand for several processes (e.g. a qcluster and its workers): their CPU is summed;
        # ("tree", pid) counts a forking server with its live and reaped children.
        self.pids = pids

    def _cpu(self, pids: int | list[int] | tuple[str, int]) -> float:
        if isinstance(pids, tuple):  # ("tree", pid): a forking server, see tree_cpu_seconds
            return tree_cpu_seconds(pids[1])
        return sum(cpu_seconds(pid) for pid in pids) if isinstance(pids, list) else cpu_seconds(pids)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {name: self._cpu(pid) for name, pid in self.pids.items()}
        self.m0 = _machine_jiffies()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.t0
        shares = {name: (self._cpu(pid) - self.c0[name]) / elapsed for name, pid in self.pids.items()}
        busy, total = (now - before for now, before in zip(_machine_jiffies(), self.m0))
        machine = busy / total * os.cpu_count() if total else float("nan")
        shares["others"] = max(0.0, machine - sum(shares.values()))
        return shares


def machine_note() -> str:
    load = os.getloadavg()
    return f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def format_cpu(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share * 100:.0f}%" for name, share in shares.items()) + " of one core"


# --- profiling --------------------------------------------------------------------------------------------
class Profile:
    """py-spy (non-blocking sampling) of one process for a while; summarised as the functions most often on
    CPU (self) and most often on the stack (total). Optional: absent py-spy, it says so and does nothing."""

    def __init__(self, run: BenchRun, pid: int, label: str, seconds: float, rate: int = 200):
        self.label = label
        self.raw = run.tmp / f"pyspy-{label}.txt"
        self.process = None
        if not PY_SPY.exists():
            log("py-spy is not installed (.venv/bin/pip install py-spy): no profile")
            return
        self.process = run.spawn([str(PY_SPY), "record", "--nonblocking", "--format", "raw", "--rate", str(rate),
                                  "--duration", str(max(1, int(seconds))), "--pid", str(pid), "-o", str(self.raw)],
                                 env=dict(os.environ), log_name=f"pyspy-{label}.log")

    def summary(self, top: int = 12, focus: tuple[str, ...] = ()) -> str:
        """Self time by function, then time on the stack for functions whose path contains one of `focus`;
        percentages of the samples in which the process was running (waits in select/locks left out)."""
        if self.process is None:
            return ""
        self.process.wait(60)
        if not self.raw.exists():
            return f"py-spy wrote nothing for {self.label}"
        own: dict[str, int] = {}
        total: dict[str, int] = {}
        samples = idle = 0
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [_short_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            if frames[-1].startswith(_IDLE_LEAVES):
                idle += n
                continue
            samples += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                total[frame] = total.get(frame, 0) + n
        if not samples:
            return f"py-spy: no on-CPU samples for {self.label}"
        lines = [f"py-spy, {self.label}: {samples} running samples ({idle} more waiting in select/locks, left out)",
                 "  self time:"]
        lines += [f"    {n / samples * 100:5.1f}%  {frame}" for frame, n in
                  sorted(own.items(), key=lambda kv: -kv[1])[:top]]
        if focus:
            lines.append(f"  on the stack (inclusive), in {', '.join(focus)}:")
            picked = [(f, n) for f, n in total.items() if any(m in f for m in focus)]
            lines += [f"    {n / samples * 100:5.1f}%  {frame}" for frame, n in
                      sorted(picked, key=lambda kv: -kv[1])[:top]]
        return "\n".join(lines)


_IDLE_LEAVES = ("EpollSelector.select", "Condition.wait", "Event.wait", "Thread._wait_for_tstate_lock",
                "SimpleQueue.get", "Queue.get (queue.py)", "sleep")


def _short_frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"; keep the function and the package path.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# --- publishers and websocket clients (B3, B4) -------------------------------------------------------------
class Publisher:
    """bench/event_publisher.py in its own process, for as many rounds as needed (see its docstring)."""

    def __init__(self, run: BenchRun, env: dict, *, owner_id: int, tag: str = "p0"):
        self.tag = tag
        self.process = run.spawn([PYTHON, str(BENCH_DIR / "event_publisher.py"), "--owner-id", str(owner_id),
                                  "--tag", tag],
                                 env=env, log_name=f"publisher-{tag}.log", stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        self.run = run
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read_lines, name=f"publisher-{tag}-stdout", daemon=True).start()

    def wait_ready(self, timeout: float = 30) -> None:
        """Blocks until the publisher is set up and probing (again, after a round)."""
        line = self._line(timeout)
        if not json.loads(line).get("ready"):
            raise RuntimeError(f"publisher {self.tag}: unexpected {line!r}")

    def go(self, *, rate: float | None, duration: float, bounded: bool = False) -> None:
        self.process.stdin.write(f"go {'max' if rate is None else rate} {duration}{' bounded' if bounded else ''}\n")
        self.process.stdin.flush()

    def result(self, timeout: float = 120) -> dict:
        return json.loads(self._line(timeout))

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.run.stop(self.process)

    def _line(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"publisher {self.tag} said nothing for {timeout} s: {self._log_tail()}") from None
        if line is None:
            raise RuntimeError(f"publisher {self.tag} exited: {self._log_tail()}")
        return line

    def _read_lines(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _log_tail(self) -> str:
        return (self.run.tmp / f"publisher-{self.tag}.log").read_text()[-2000:]


async def ws_connect(server: Server, token: str):
    """A real websocket client on /ws/events/, as a browser on the same host would connect."""
    from websockets.asyncio.client import connect

    return await connect(f"{server.ws_url}/ws/events/?token={token}", origin="http://127.0.0.1", open_timeout=15,
                         max_queue=None, ping_interval=None)


class RedisCommands:
    """Redis commands executed between start() and stop() (INFO commandstats), by command."""

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)

    def _counts(self) -> dict[str, int]:
        return {name.removeprefix("cmdstat_"): stats["calls"]
                for name, stats in self.client.info("commandstats").items()}

    def start(self) -> None:
        self.before = self._counts()

    def stop(self) -> dict[str, int]:
        after = self._counts()
        delta = {name: calls - self.before.get(name, 0) for name, calls in after.items()}
        return {name: n for name, n in sorted(delta.items(), key=lambda kv: -kv[1]) if n > 0 and name != "info"}

    def round_trip_ms(self, samples: int = 200) -> float:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            self.client.ping()
            times.append(time.perf_counter() - started)
        return median(times) * 1000


def format_commands(delta: dict[str, int], per: int, label: str) -> str:
    total = sum(delta.values())
    parts = ", ".join(f"{name} {n / per:.1f}" for name, n in list(delta.items())[:8])
    return f"Redis commands per {label}: {total / per:.1f} ({parts})"


# --- PostgreSQL activity ------------------------------------------------------------------------------------
class PgActivity:
    """Samples pg_stat_activity from a thread: client connections (and their peak), and what active backends
    wait on. Lock waits (wait_event_type 'Lock': advisory, transactionid, tuple, relation) show contention on
    shared rows or locks; 'Client' waits are backends idle in a transaction waiting for their Python side."""

    def __init__(self, url: str, interval: float = 0.02):
        import psycopg

        self.connection = psycopg.connect(url, autocommit=True)
        self.interval = interval
        self.max_connections = int(self.connection.execute("SHOW max_connections").fetchone()[0])
        self.samples = 0
        self.peak = 0
        self.waits: dict[str, int] = {}  # "Lock:advisory" -> backends seen waiting, summed over samples
        self.active = 0  # active backends, summed over samples
        self.lost = 0  # samples that failed (the sampler's own connection broken)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pg-activity", daemon=True)

    def _sample(self) -> None:
        query = ("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                 "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
        import psycopg

        while not self._stop.wait(self.interval):
            try:
                rows = self.connection.execute(query).fetchall()
            except psycopg.Error:
                self.lost += 1
                continue
            self.samples += 1
            self.peak = max(self.peak, len(rows))
            for state, wait_type, wait_event in rows:
                if state != "active":
                    continue
                self.active += 1
                if wait_type in ("Lock", "LWLock", "IO"):
                    key = f"{wait_type}:{wait_event}"
                    self.waits[key] = self.waits.get(key, 0) + 1

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        self.connection.close()
        n = max(1, self.samples)
        return {"peak_connections": self.peak, "max_connections": self.max_connections,
                "active_avg": self.active / n, "waits_avg": {k: v / n for k, v in
                                                            sorted(self.waits.items(), key=lambda kv: -kv[1])}}


def format_pg_activity(stats: dict) -> str:
    waits = ", ".join(f"{k} {v:.2f}" for k, v in stats["waits_avg"].items()) or "none seen"
    return (f"PostgreSQL: peak {stats['peak_connections']} client connections (max_connections "
            f"{stats['max_connections']}); on average {stats['active_avg']:.2f} backends executing a statement, "
            f"of which waiting on a lock: {waits}")
