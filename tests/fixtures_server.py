"""A real daphne server (a separate process) serving this test's database: for real websocket clients,
browsers and cross-process tests. Use with `@pytest.mark.django_db(transaction=True)` so the server sees
committed rows. Also real django-q2 workers, and a private redis-server a test may kill."""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from django.db import connection

from tests import launcher

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_refusing: list[socket.socket] = []


def refusing_port() -> int:
    """A port of 127.0.0.1 where every connection is refused while this process lives: bound, never listening, and
    held open, so that no server started meanwhile (by this test or another worker's) can take it, as it could take
    a port that was bound and closed again."""
    if not _refusing:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        _refusing.append(sock)
    return _refusing[0].getsockname()[1]


def database_url() -> str:
    """The URL of the database this test is using (the test database, not the configured one)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def server_env(tmp_path, **extra) -> dict:
    # The test settings' own switches (e.g. CHATTER_Q_SYNC) must not leak into real server processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST") and k != "CHATTER_Q_SYNC"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "chatter_project.settings",
        "SECRET_KEY": "test-server-secret",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url(),
        "CHATTER_VAR_DIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        **extra,
    })
    return env


def start_worker(tmp_path, **extra_env) -> launcher.Process | subprocess.Popen:
    """A real django-q2 worker (`manage.py qcluster`) on the test database (forked by tests/launcher.py)."""
    log = tmp_path / f"qcluster-{time.monotonic_ns()}.log"
    return launcher.launch([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=server_env(tmp_path, **extra_env),
                           log=log)


def start_daphne(tmp_path, port: int, **extra_env) -> launcher.Process | subprocess.Popen:
    """A daphne process serving the test database on `port` (forked by tests/launcher.py); not waited for."""
    return launcher.launch(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatter_project.asgi:application"],
        cwd=ROOT, env=server_env(tmp_path, **extra_env), log=tmp_path / f"daphne-{port}.log")


def stop_process(process: launcher.Process | subprocess.Popen) -> None:
    stop_processes([process])


def stop_processes(processes: list[launcher.Process | subprocess.Popen]) -> None:
    """Stops them together: all are asked (SIGTERM) before any is waited for, so their shutdowns overlap; one still
    running 20 s later is killed."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Server:
    def __init__(self, process: launcher.Process | subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"


def daphne_start(tmp_path, **extra_env) -> Server:
    """A daphne process on a free port, serving the test database with `extra_env`; back once it accepts
    connections. A port another process took between `free_port()` and daphne's bind (make test's parallel
    workers) is tried again on another."""
    for _ in range(3):
        try:
            return _daphne_start(tmp_path, **extra_env)
        except PortTaken:
            continue
    return _daphne_start(tmp_path, **extra_env)


class PortTaken(RuntimeError):
    pass


def _daphne_start(tmp_path, **extra_env) -> Server:
    port = free_port()
    log = tmp_path / f"daphne-{port}.log"
    process = start_daphne(tmp_path, port, **extra_env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text()
            raise (PortTaken if "Address already in use" in output else RuntimeError)(f"daphne exited: {output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"daphne did not start: {log.read_text()}")
    return Server(process, port, log)


@pytest.fixture
def daphne_server(transactional_db, tmp_path):
    """Starts servers of this test's own (`daphne_server(**env)`), stopped when it ends: for a test that needs its
    own environment, stops or restarts its server, or needs two."""
    servers: list[Server] = []

    def start(**extra_env) -> Server:
        server = daphne_start(tmp_path, **extra_env)
        servers.append(server)
        return server

    yield start
    stop_processes([server.process for server in servers])


# How long a shared server's runs may take to end after their test (a stub reply's delay, a cancelled stream's
# last call): a run still going then would write into the next test's database, so its server is replaced.
SETTLE_S = 10.0


class SharedServers:
    """Daphne servers shared by the tests of one pytest process, one per environment, started when first asked for.

    The server reads the test database live and `transactional_db` empties it after each test. What a server keeps
    in memory is keyed by what a flush never gives out again (a key's, user's or run's id; ids are not reused), by
    the graph, or by its environment, except the upstream's model list (read once a minute): a test that changes
    what the stub serves is marked `own_server`. After each test its server must be idle: once no run of the test
    is `running`, and none is left `pending` (which the server itself could start later), it serves the next test;
    otherwise it is stopped and the next test gets a new one, as does a test after a server that died."""

    started = replaced = 0  # over the session, for its summary

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: dict[tuple, Server] = {}

    def server(self, **extra_env) -> Server:
        key = tuple(sorted(extra_env.items()))
        server = self.servers.get(key)
        if server is not None and server.process.poll() is not None:
            self.retire(server)
            server = None
        if server is None:
            server = self.servers[key] = daphne_start(self.tmp_path, **extra_env)
            SharedServers.started += 1
        return server

    def settle(self, server: Server) -> None:
        from workflows.models import WorkflowExecution

        Status = WorkflowExecution.Status
        deadline = time.monotonic() + SETTLE_S
        while WorkflowExecution.objects.filter(status=Status.RUNNING).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if WorkflowExecution.objects.filter(status__in=(Status.RUNNING, Status.PENDING)).exists():
            self.retire(server)
            SharedServers.replaced += 1

    def retire(self, server: Server) -> None:
        stop_process(server.process)
        self.servers = {key: kept for key, kept in self.servers.items() if kept is not server}

    def stop_all(self) -> None:
        stop_processes([server.process for server in self.servers.values()])
        self.servers = {}


@pytest.fixture(scope="session")
def _shared_servers(django_db_setup, tmp_path_factory):
    servers = SharedServers(tmp_path_factory.mktemp("shared-servers"))
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def collected_static(_shared_servers) -> Path:
    """The static files collected once, where the shared servers serve them from (their CHATTER_VAR_DIR): for the
    tests that open pages in a browser."""
    from django.core.management import call_command
    from django.test import override_settings

    root = _shared_servers.tmp_path / "static"
    with override_settings(STATIC_ROOT=root):
        call_command("collectstatic", interactive=False, verbosity=0)
    # WhiteNoise lists the files when its server starts: one started before (by another module's test) serves none.
    _shared_servers.stop_all()
    return root


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.get_closest_marker("server") for item in session.items):
        launcher.prestart()  # it preloads while the test database is created


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for line in launcher.summary():
        terminalreporter.write_line(line)
    if SharedServers.started:
        terminalreporter.write_line(f"shared daphne servers: {SharedServers.started} started, {SharedServers.replaced} "
                                    "replaced after a test left a run going")


@pytest.fixture
def shared_daphne_server(transactional_db, _shared_servers, daphne_server, request):
    """Like `daphne_server`, but a server shared with the other tests of the session that ask for the same
    environment (see SharedServers); a test marked `own_server` gets one of its own."""
    used: list[Server] = []

    def start(**extra_env) -> Server:
        if request.node.get_closest_marker("own_server"):
            return daphne_server(**extra_env)
        server = _shared_servers.server(**extra_env)
        used.append(server)
        return server

    yield start
    for server in dict.fromkeys(used):
        _shared_servers.settle(server)


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private redis-server on 127.0.0.1 that a test can stop (SIGKILL) and start again on the same port.

    The port is held for the object's life by a socket bound to it and never listening, with SO_REUSEADDR as
    redis-server binds its own: redis-server listens beside it, a connection is refused while it is down, and no
    server started meanwhile (by this test or another worker's: free_port() never picks a bound port) can take the
    port, as one could between free_port() and the first start, or between a kill and the next start."""

    def __init__(self, tmp_path):
        self.tmp_path, self.process = tmp_path, None
        self._holder = socket.socket()
        self._holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._holder.bind(("127.0.0.1", 0))
        self.port = self._holder.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.tmp_path / "redis.log").open("a")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp_path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while not _pong(self.port):
            assert self.process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)

    def pause(self) -> None:
        """Hung (SIGSTOP), its data kept: a connection opens but nothing answers, as a Redis that stalls."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stopped for good: the port is let go."""
        self.kill()
        self._holder.close()


@pytest.fixture
def private_redis(tmp_path):
    redis = RedisServer(tmp_path)
    try:
        redis.start()
        yield redis
    finally:
        redis.close()


class PrivatePostgres:
    """A PostgreSQL cluster (and Redis) of a test module's own, from scripts/services.sh, migrated once: one its tests
    may stop and restart without touching the suite's database. Each test gets a database of its own in it, made from
    the migrated one (`CREATE DATABASE … TEMPLATE`: a copy of its files, not a migrate: `for_test`), and Redis
    emptied."""

    def __init__(self, tmp_path, *, cluster: "PrivatePostgres | None" = None, url: str = ""):
        self.tmp_path = tmp_path
        self.dir = cluster.dir if cluster is not None else tmp_path / "services"
        self.url, self.redis_url = url, cluster.redis_url if cluster is not None else ""

    def start(self) -> None:
        with (self.tmp_path / "services.log").open("a") as log:
            subprocess.run([str(ROOT / "scripts" / "services.sh"), "start", str(self.dir)], check=True,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        env = dict(line.removeprefix("export ").split("=", 1) for line in (self.dir / "env").read_text().split("\n")
                   if line.startswith("export "))
        self.url, self.redis_url = env["DATABASE_URL"], env["REDIS_URL"]
        self.manage("migrate", "--noinput")

    def for_test(self, tmp_path) -> "PrivatePostgres":
        """A test's own: a new database copied from the migrated one (which nothing stays connected to), on this
        cluster, Redis emptied; its servers' logs under the test's `tmp_path`."""
        import psycopg
        import redis

        name = f"chatter_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:  # (CREATE DATABASE: outside a transaction)
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.url.rsplit("/", 1)[1]}"')
        redis.Redis.from_url(self.redis_url).flushall()
        return PrivatePostgres(tmp_path, cluster=self, url=f"{self.url.rsplit('/', 1)[0]}/{name}")

    def env(self, **extra) -> dict:
        return server_env(self.tmp_path, DATABASE_URL=self.url, REDIS_URL=self.redis_url, **extra)

    def manage(self, *args: str, **env: str) -> str:
        done = launcher.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env(**env), timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def restart(self) -> None:
        """`pg_ctl restart` (fast: sessions are ended), back once it accepts connections again."""
        self._pg_ctl("restart")

    @contextmanager
    def down(self) -> Iterator[None]:
        """PostgreSQL stopped (fast: sessions are ended, a new connection is refused) for the block, then started
        again, back once it accepts connections; Redis stays up."""
        root = Path((self.dir / "pgroot").read_text().strip())
        # (the options it was started with, as `pg_ctl restart` reads them: its port among them)
        options = shlex.split((root / "data" / "postmaster.opts").read_text())[1:]
        self._pg_ctl("stop")
        try:
            yield
        finally:
            self._pg_ctl("start", "-o", shlex.join(options[2:] if options[:1] == ["-D"] else options))

    def _pg_ctl(self, action: str, *options: str) -> None:
        root = Path((self.dir / "pgroot").read_text().strip())
        bindir = Path((self.dir / "pgbin").read_text().strip())
        command = [str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "postgres.log"), "-w",
                   "-t", "60", "-m", "fast", action, *options]
        if os.geteuid() == 0:  # as scripts/services.sh runs it
            command = ["runuser", "-u", "postgres", "--", *command]
        # The server outlives pg_ctl: it must not hold a pipe of ours.
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)

    def stop(self) -> None:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), "stop", str(self.dir)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="module")
def private_postgres_cluster(tmp_path_factory):
    """The module's PostgreSQL cluster and Redis (PrivatePostgres), started and migrated once."""
    postgres = PrivatePostgres(tmp_path_factory.mktemp("private-postgres"))
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop()


@pytest.fixture
def private_postgres(private_postgres_cluster, tmp_path):
    """A test's own database on the module's private cluster (PrivatePostgres.for_test); a test that stopped the
    cluster started it again as it left `down()`."""
    return private_postgres_cluster.for_test(tmp_path)
