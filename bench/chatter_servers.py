"""Chatter as its users run it, for a benchmark: a fresh database migrated and seeded through `manage.py`, one
user, servers (daphne, uvicorn) on free loopback ports, a django-q2 worker, API tokens, websocket clients."""
from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.processes import HOST, PYTHON, ROOT, BenchRun, ensure_tools, free_port, log, wait_http, wait_listening

USERNAME = "bench"
# Settings the caller's shell may carry that would point a benchmark at something it did not start.
_FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "CHATTER_", "DJANGO_SETTINGS_MODULE", "PYTEST")
_CREATE_USER = (
    "import django, sys; django.setup()\n"
    "from django.contrib.auth import get_user_model\n"
    "print(get_user_model().objects.create_user(sys.argv[1], password=sys.stdin.read()).pk)\n"
)


@dataclass
class Database:
    env: dict  # the environment a server, worker or publisher process needs for this database
    user_id: int
    password: str
    label: str


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"


def chatter_env(run: BenchRun, label: str, **extra) -> dict:
    """The project's own settings (DEBUG off), a var dir of its own, and `extra` (None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    var_dir = run.tmp / f"var-{label}"
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
    return _with(env, extra)


def _with(env: dict, extra: dict) -> dict:
    env = {**env, **{k: str(v) for k, v in extra.items() if v is not None}}
    for key in [k for k, v in extra.items() if v is None]:
        env.pop(key, None)
    return env


def create_user(database_env: dict, username: str, password: str) -> int:
    result = subprocess.run([PYTHON, "-c", _CREATE_USER, username], cwd=ROOT, env=database_env, input=password,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"creating user {username} failed:\n{result.stderr}")
    return int(result.stdout.strip().splitlines()[-1])


def chatter_database(run: BenchRun, label: str, **extra_env) -> Database:
    """A fresh database (SQLite in its own var dir unless DATABASE_URL is given), migrated and seeded, with the
    bench user."""
    env = chatter_env(run, label, **extra_env)
    log(f"migrating a fresh {label} database")
    for args in (["manage.py", "migrate", "--noinput", "-v0"], ["manage.py", "seed"]):
        result = subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    password = secrets.token_urlsafe(18)
    return Database(env=env, user_id=create_user(env, USERNAME, password), password=password, label=label)


def daphne(run: BenchRun, database: Database, *, app: str = "chatter_project.asgi:application",
           label: str | None = None, **extra_env) -> Server:
    port = free_port()
    env = _with(database.env, extra_env)
    label = label or database.label
    log_name = f"daphne-{label}-{port}.log"
    process = run.spawn([PYTHON, "-m", "daphne", "-b", HOST, "-p", str(port), app], env=env, log_name=log_name)
    wait_listening(process, port, run.tmp / log_name, what="daphne")
    log(f"daphne ({label}) on {HOST}:{port}, pid {process.pid}")
    return Server(process=process, port=port, log_path=run.tmp / log_name, env=env)


def uvicorn_env(database: Database) -> dict | None:
    """`database.env` with uvicorn (httptools, uvloop) importable from the bench's tools; None without them."""
    tools = ensure_tools()
    if tools is None:
        return None
    env = {**database.env, "PYTHONPATH": f"{ROOT}:{tools}"}
    found = subprocess.run([PYTHON, "-c", "import uvicorn, uvloop, httptools"], env=env, capture_output=True,
                           check=False)
    return env if found.returncode == 0 else None


def uvicorn(run: BenchRun, database: Database, *, label: str, root: Path = ROOT) -> Server:
    """The same ASGI application served by uvicorn (httptools, uvloop), from the bench's tools; `root`: the
    checkout it is served from (another's, to compare two side by side on one database)."""
    env = uvicorn_env(database)
    if env is None:
        raise RuntimeError("uvicorn is not available (see bench/requirements.txt)")
    env["PYTHONPATH"] = env["PYTHONPATH"].replace(str(ROOT), str(root), 1)
    port = free_port()
    log_name = f"uvicorn-{label}-{port}.log"
    process = run.spawn([PYTHON, "-m", "uvicorn", "chatter_project.asgi:application", "--host", HOST, "--port",
                         str(port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"],
                        env=env, log_name=log_name, cwd=root)
    wait_http(process, port, "/api/v1/auth/token/", run.tmp / log_name, what="uvicorn")
    log(f"uvicorn ({label}) on {HOST}:{port}, pid {process.pid}")
    return Server(process=process, port=port, log_path=run.tmp / log_name, env=env)


def qcluster(run: BenchRun, database: Database, *, label: str = "worker", **extra_env) -> subprocess.Popen:
    """A django-q2 worker (`manage.py qcluster`) on `database`; it takes tasks once it is up (a few s)."""
    process = run.spawn([PYTHON, "manage.py", "qcluster"], env=_with(database.env, extra_env),
                        log_name=f"qcluster-{label}.log")
    log(f"qcluster ({label}), pid {process.pid}")
    return process


def api_token(server: Server, username: str, password: str) -> str:
    """POST /api/v1/auth/token/."""
    import httpx

    response = httpx.post(f"{server.base_url}/api/v1/auth/token/", json={"username": username, "password": password},
                          timeout=10)
    response.raise_for_status()
    return response.json()["token"]


def bench_token(server: Server, database: Database) -> str:
    """The bench user's API token."""
    return api_token(server, USERNAME, database.password)


def add_user(server: Server, database: Database, username: str) -> str:
    """One more user with a fresh password on `database`; returns its API token."""
    password = secrets.token_urlsafe(18)
    create_user(database.env, username, password)
    return api_token(server, username, password)


async def ws_connect(server: Server, token: str):
    """A real websocket client on /ws/events/, as a browser on the same host would connect."""
    from websockets.asyncio.client import connect

    return await connect(f"{server.ws_url}/ws/events/?token={token}", origin="http://127.0.0.1", open_timeout=15,
                         max_queue=None, ping_interval=None)
