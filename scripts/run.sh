#!/usr/bin/env bash
# `make run`: migrate, seed, make sure there is an admin, then serve HTTP + websockets (daphne) and
# the background worker (django-q2 qcluster) on $HOST:$PORT (default 127.0.0.1:8000: this machine only).
# "Serving ..." is printed once the port is bound. One Ctrl-C stops both; if either dies, the other is
# stopped and the exit status is non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python

# Optional local settings (see .env.example); variables already in the environment win.
if [ -f .env ]; then
    saved_env=$(export -p)
    set -a
    # shellcheck disable=SC1091
    . ./.env
    set +a
    eval "$saved_env"
fi

# Where to serve, from the environment (or .env). Never another interface unless asked for.
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
    echo "PORT must be a port number (1-65535), got '$PORT'" >&2
    exit 2
fi
if [ -z "$HOST" ] || [[ "$HOST" =~ [[:space:]/] ]]; then
    echo "HOST must be an address or host name to bind, got '$HOST'" >&2
    exit 2
fi

# The port first: with another server on it, migrating, printing a new admin's password and then failing to
# bind would mislead (and the "Serving" probe would reach that other server). SO_REUSEADDR as daphne binds, so
# connections of a server that just stopped (TIME_WAIT) do not count; a listening socket does.
if ! "$PY" - "$HOST" "$PORT" <<'PYTHON'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
except OSError as error:
    print(f"Chatter could not serve {host}:{port}: {error.strerror or error} (another server on that port? "
          "Stop it, or choose another port: PORT=8080 make run)", file=sys.stderr)
    sys.exit(1)
PYTHON
then
    exit 1
fi

# A SECRET_KEY from the environment, or one generated on first run and kept in var/secret_key
# (var/ is CHATTER_VAR_DIR when set, like in settings.py).
VAR_DIR="${CHATTER_VAR_DIR:-var}"
mkdir -p "$VAR_DIR"
if [ -z "${SECRET_KEY:-}" ]; then
    if [ ! -s "$VAR_DIR/secret_key" ]; then
        (umask 077 && "$PY" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$VAR_DIR/secret_key.tmp")
        mv "$VAR_DIR/secret_key.tmp" "$VAR_DIR/secret_key"
        echo "Generated a SECRET_KEY in $VAR_DIR/secret_key"
    fi
    chmod 600 "$VAR_DIR/secret_key"
    SECRET_KEY=$(cat "$VAR_DIR/secret_key")
    export SECRET_KEY
fi
# Requests must name a host Django accepts: this machine's names, and the one asked for.
default_hosts=127.0.0.1,localhost
case "$HOST" in
    127.0.0.1 | localhost | 0.0.0.0 | ::) ;;
    *) default_hosts="$default_hosts,$HOST" ;;
esac
export ALLOWED_HOSTS="${ALLOWED_HOSTS:-$default_hosts}"
# The offline demo model streams a word every 25 ms so the live page visibly streams.
export CHATTER_LOCAL_TOKEN_DELAY_MS="${CHATTER_LOCAL_TOKEN_DELAY_MS:-25}"

"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput -v0
"$PY" manage.py seed
case "$HOST" in
    *:*) url_host="[$HOST]" ;;
    *) url_host=$HOST ;;
esac
"$PY" manage.py ensure_admin --url "http://$url_host:$PORT/admin/"

daphne_pid=""
qcluster_pid=""

stop_children() {
    local pid alive
    # SIGTERM to each leader only: qcluster stops its own workers in order, and hangs if they are
    # signalled behind its back.
    for pid in $daphne_pid $qcluster_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 150); do
        alive=""
        for pid in $daphne_pid $qcluster_pid; do
            if kill -0 "$pid" 2>/dev/null; then
                alive=1
            fi
        done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    # Whatever is still there after 15 s, and anything a leader left behind in its group.
    for pid in $daphne_pid $qcluster_pid; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked by the traps below
on_signal() {
    trap - INT TERM
    echo
    echo "Stopping the server and the worker..."
    stop_children
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Each child in its own process group (set -m): a Ctrl-C reaches only this script, which then stops
# both in order, and a group can be cleared of anything its leader left behind.
set -m
.venv/bin/daphne -b "$HOST" -p "$PORT" chatter_project.asgi:application </dev/null &
daphne_pid=$!
"$PY" manage.py qcluster </dev/null &
qcluster_pid=$!
set +m

# A wildcard bind is reached on the loopback address.
case "$HOST" in
    0.0.0.0) probe_host=127.0.0.1 ;;
    ::) probe_host=::1 ;;
    *) probe_host=$HOST ;;
esac
# "Serving" only once daphne accepts connections (it can take seconds to start, or fail to bind); bash's own
# /dev/tcp connects without starting a Python each try.
until (exec 3<>"/dev/tcp/$probe_host/$PORT") 2>/dev/null; do
    if ! kill -0 "$daphne_pid" 2>/dev/null; then
        echo "daphne could not serve $HOST:$PORT (is the port in use?); stopping the worker." >&2
        trap - INT TERM
        stop_children
        exit 1
    fi
    sleep 0.2
done

echo "Serving http://$url_host:$PORT/ (HTTP and websockets; admin at /admin/) and the background worker."
echo "Press Ctrl-C to stop both."

set +e
wait -n "$daphne_pid" "$qcluster_pid"
rc=$?
set -e
if ! kill -0 "$daphne_pid" 2>/dev/null; then
    echo "daphne exited (status $rc); stopping the worker." >&2
else
    echo "qcluster exited (status $rc); stopping the server." >&2
fi
trap - INT TERM
stop_children
if [ "$rc" -eq 0 ]; then
    rc=1
fi
exit "$rc"
