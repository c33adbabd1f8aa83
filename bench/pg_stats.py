"""What PostgreSQL did while a benchmark measured: transactions and statements per database (for "statements
and transactions per HTTP turn"), and sampled backend activity (connections, lock waits)."""
from __future__ import annotations

import subprocess
import threading
import time
from typing import Self

from bench.processes import BenchRun, log
from bench.services import Services, start_services

_TRANSACTION_CONTROL = r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|START TRANSACTION|END)\b"
# PostgreSQL's own foreign-key checks (one per row written with a foreign key), which pg_stat_statements lists
# beside the client's statements: counted apart.
_FOREIGN_KEY_CHECK = r'^SELECT \S+ FROM ONLY "'


class DbWork:
    """Per-database counters, read as the postgres superuser over the server's own socket, from the `postgres`
    database (so reading them adds nothing to the databases measured):
    - transactions: pg_stat_database.xact_commit + xact_rollback; sessions: new connections;
    - statements: pg_stat_statements calls, transaction control (BEGIN, COMMIT, SAVEPOINT…) left out, when the
      server preloads it (`enable_statements()` restarts it so); fk_checks: PostgreSQL's own foreign-key checks
      (`SELECT 1 FROM ONLY … FOR KEY SHARE`, one per row written with a foreign key), which pg_stat_statements
      lists too: counted apart from the client's statements. A read outside a transaction is a transaction of
      its own.

    A backend reports its transaction and session counts at most once a second, and one that has gone idle
    within that second only after 10 s (PostgreSQL's PGSTAT_MIN_INTERVAL and PGSTAT_IDLE_INTERVAL), so
    `settled()` waits that long before a reading; pg_stat_statements counts at once."""

    def __init__(self, services: Services):
        self.services = services
        self.statements = False

    def _connect(self):
        import psycopg

        port = self.services.database_url.rsplit(":", 1)[1].split("/")[0]
        return psycopg.connect(host=str(self.services.pgroot), port=port, user="postgres", dbname="postgres",
                               autocommit=True)

    def enable_statements(self) -> None:
        """Restart PostgreSQL with pg_stat_statements preloaded, and create the extension. Not where the build has
        none (scripts/services.sh's has none): the restart would fail, leaving no server."""
        with self._connect() as connection:
            available = connection.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'").fetchone()
        if not available:
            raise OSError("this PostgreSQL build has no pg_stat_statements")
        self.services.restart_postgres(shared_preload_libraries="pg_stat_statements",
                                       **{"pg_stat_statements.max": 10000})
        with self._connect() as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.statements = True

    def read(self, databases: list[str]) -> dict[str, dict[str, int]]:
        """{database: {"transactions", "sessions", "statements"}} now (statements 0 without pg_stat_statements)."""
        with self._connect() as connection:
            connection.execute("SELECT pg_stat_clear_snapshot()")
            rows = connection.execute(
                "SELECT datname, xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = ANY(%s)",
                [databases]).fetchall()
            found = {name: {"transactions": xacts, "sessions": sessions, "statements": 0, "fk_checks": 0}
                     for name, xacts, sessions in rows}
            if self.statements:
                for name, statements, fk_checks in connection.execute(
                        "SELECT d.datname, sum(s.calls) FILTER (WHERE s.query !~ %s), "
                        "sum(s.calls) FILTER (WHERE s.query ~ %s) FROM pg_stat_statements s "
                        "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = ANY(%s) AND s.query !~* %s "
                        "GROUP BY d.datname",
                        [_FOREIGN_KEY_CHECK, _FOREIGN_KEY_CHECK, databases, _TRANSACTION_CONTROL]).fetchall():
                    found[name]["statements"], found[name]["fk_checks"] = int(statements or 0), int(fk_checks or 0)
        return found

    def settled(self, databases: list[str], wait: float = 10.5) -> tuple[float, dict[str, dict[str, int]]]:
        """(monotonic time, reading) `wait` s from now, when every idle backend has reported what it did."""
        time.sleep(wait)
        return time.monotonic(), self.read(databases)


def services_counted(run: BenchRun) -> tuple[Services, DbWork]:
    """PostgreSQL + Redis for `run`, PostgreSQL restarted to count statements (pg_stat_statements) when it can."""
    services = start_services(run)
    db = DbWork(services)
    try:
        db.enable_statements()
    except (OSError, subprocess.CalledProcessError) as error:
        log(f"pg_stat_statements not available ({error}): statements not counted")
    return services, db


def work_per_turn(before: tuple, after: tuple, idle: dict[str, dict[str, float]], database: str,
                  turns: int) -> dict[str, float]:
    """Counters of `database` between two `settled()` readings, per turn, less what the database does with no
    request in flight (`idle`, per second) over the same time."""
    (t0, first), (t1, last) = before, after
    rates = idle.get(database, {})
    return {key: (last[database][key] - first[database][key] - rates.get(key, 0.0) * (t1 - t0)) / turns
            for key in last[database]}


class PgActivity:
    """Samples pg_stat_activity from a thread: client connections (and their peak), and what active backends
    wait on. Lock waits (wait_event_type 'Lock': advisory, transactionid, tuple, relation) show contention on
    shared rows or locks."""

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
        self.waiting_statements: dict[str, int] = {}  # a lock-waiting backend's statement (its start) -> samples
        # Backends in a transaction waiting for their client (state 'idle in transaction'), by the statement they
        # ran last: where a transaction's own process keeps it open (and any row lock it took) between statements.
        self.in_transaction: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="pg-activity", daemon=True)

    def _sample(self) -> None:
        import psycopg

        query = ("SELECT state, wait_event_type, wait_event, left(query, 160) FROM pg_stat_activity "
                 "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = current_database()")
        while not self._stop.wait(self.interval):
            try:
                rows = self.connection.execute(query).fetchall()
            except psycopg.Error:
                self.lost += 1
                continue
            self.samples += 1
            self.peak = max(self.peak, len(rows))
            for state, wait_type, wait_event, statement in rows:
                if state == "idle in transaction":
                    key = statement[:60]
                    self.in_transaction[key] = self.in_transaction.get(key, 0) + 1
                if state != "active":
                    continue
                self.active += 1
                if wait_type in ("Lock", "LWLock", "IO"):
                    key = f"{wait_type}:{wait_event}"
                    self.waits[key] = self.waits.get(key, 0) + 1
                if wait_type == "Lock":
                    key = f"{wait_event}: {statement}"
                    self.waiting_statements[key] = self.waiting_statements.get(key, 0) + 1

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        self.connection.close()
        n = max(1, self.samples)
        return {"peak_connections": self.peak, "max_connections": self.max_connections,
                "active_avg": self.active / n,
                "waits_avg": {k: v / n for k, v in sorted(self.waits.items(), key=lambda kv: -kv[1])},
                "waiting_statements": {k: v / n for k, v in sorted(self.waiting_statements.items(),
                                                                   key=lambda kv: -kv[1])[:5]},
                "in_transaction_avg": sum(self.in_transaction.values()) / n,
                "in_transaction_after": {k: v / n for k, v in sorted(self.in_transaction.items(),
                                                                     key=lambda kv: -kv[1])[:4]}}


def format_pg_activity(stats: dict) -> str:
    waits = ", ".join(f"{k} {v:.2f}" for k, v in stats["waits_avg"].items()) or "none seen"
    return (f"PostgreSQL: peak {stats['peak_connections']} client connections (max_connections "
            f"{stats['max_connections']}); on average {stats['active_avg']:.2f} backends executing a statement, "
            f"of which waiting on a lock: {waits}")
