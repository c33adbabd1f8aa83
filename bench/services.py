"""PostgreSQL + Redis for a benchmark, from `scripts/services.sh` (free loopback ports, data in a throwaway
dir), stopped when the run ends; plus what a benchmark does to them: more databases on the same server, a
restart with other settings (max_connections, pg_stat_statements)."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.processes import ROOT, BenchRun, log

SERVICES_SH = ROOT / "scripts" / "services.sh"


@dataclass
class Services:
    dir: Path
    database_url: str  # postgres://… of the project's database
    redis_url: str  # redis://…/0
    redis_pid: int

    @property
    def pgroot(self) -> Path:
        return Path((self.dir / "pgroot").read_text().strip())

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgroot / "data" / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def database_url_for(self, name: str) -> str:
        """The URL of database `name` on this server, as the same role."""
        parts = urlsplit(self.database_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def redis_url_for(self, db: int) -> str:
        parts = urlsplit(self.redis_url)
        return urlunsplit(parts._replace(path=f"/{db}"))

    def create_database(self, name: str) -> str:
        """A new empty database owned by the project's role; returns its URL."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.database_url_for(name)

    def restart_postgres(self, **settings: str | int) -> None:
        """Restart PostgreSQL with these `-c name=value` settings changed or added (scripts/services.sh starts
        it with max_connections=200 and no preloaded libraries). The server runs as the postgres user."""
        opts = self.pgroot / "data" / "postmaster.opts"
        text = opts.read_text()
        for name, value in settings.items():
            pattern = re.compile(rf'"-c" "{name}=[^"]*"')
            option = f'"-c" "{name}={value}"'
            text = pattern.sub(option, text) if pattern.search(text) else f"{text.rstrip()} {option}\n"
        opts.write_text(text)
        bindir = Path(text.split()[0].strip('"')).parent
        log(f"restarting PostgreSQL with {', '.join(f'{k}={v}' for k, v in settings.items())}")
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(self.pgroot / "data"),
                        "-m", "fast", "-w", "-t", "60", "restart"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def start_services(run: BenchRun) -> Services:
    """PostgreSQL + Redis, stopped (and their data removed) when `run` ends."""
    services_dir = run.tmp / "services"
    log("starting PostgreSQL + Redis (scripts/services.sh)")
    run.on_exit(lambda: subprocess.run([str(SERVICES_SH), "stop", str(services_dir)], cwd=ROOT, check=False,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    result = subprocess.run([str(SERVICES_SH), "start", str(services_dir)], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/services.sh start failed:\n{result.stderr}")
    found = {}
    for line in (services_dir / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        found[key] = value
    return Services(dir=services_dir, database_url=found["DATABASE_URL"], redis_url=found["REDIS_URL"],
                    redis_pid=int((services_dir / "redis.pid").read_text().strip()))
