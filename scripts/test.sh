#!/usr/bin/env bash
# `make test`: the docs build, then the whole suite twice, side by side.
#   0. `mkdocs build --strict` (docs/, mkdocs.yml), into a temp dir: a broken link or page fails make test;
#   1. SQLite, in-memory channel layer (the embedded default);
#   2. PostgreSQL + Redis, started here on free ports and stopped on exit (also on failure or Ctrl-C).
# All phases always run to the end; the exit status is non-zero if any failed.
# A test that needs a real component skips when it is missing; tests/real_components.py lists such skips
# loudly at the end of each phase, and a phase fails when a component it must have was skipped: the
# browser (Chromium) and Node.js in both, PostgreSQL and Redis in the second.
# Arguments are passed to pytest in both phases (e.g. scripts/test.sh -x -k chat).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PYTEST=.venv/bin/pytest
# Each phase runs on pytest-xdist workers (CHATTER_TEST_WORKERS, 3 unless set; 1: no workers), a test file at a time
# per worker: the tests often wait on servers they started, and with six workers in all the two cores idle about 4%
# of the run (with four: 158% of two cores used, over 19 minutes; docs/development.md). Each worker
# has its own test database, Redis database (chatter_project/test_settings.py) and shared servers. The workers take
# the modules in collection order, the longest first (tests/conftest.py heaviest_first, tests/module_seconds.tsv).
TEST_WORKERS=${CHATTER_TEST_WORKERS:-3}
WORKERS=()
[ "$TEST_WORKERS" -le 1 ] || WORKERS=(-n "$TEST_WORKERS" --dist loadfile --no-loadscope-reorder)
SERVICES_ROOT=var/test-services
# Bytecode is written (into git-ignored __pycache__ dirs): pytest keeps each test module's rewritten asserts there,
# so the phases and their workers after the first do not rewrite and compile them again.
unset PYTHONDONTWRITEBYTECODE

header() {
    printf '\n%s\n== %s\n%s\n' "$(printf '=%.0s' {1..78})" "$1" "$(printf '=%.0s' {1..78})"
}

result() {
    case "$1" in
        0) echo "passed" ;;
        *) echo "FAILED (exit $1)" ;;
    esac
}

# The real components a phase skipped, from its CHATTER_SKIP_REPORT file ("name<TAB>count" lines).
skipped_components() {
    local line name count out=""
    [ -s "$1" ] || return 0
    while IFS=$'\t' read -r name count; do
        out="$out${out:+, }$name ($count tests)"
    done <"$1"
    echo "; SKIPPED, NOT RUN: $out"
}

# Waits up to 10 minutes for another apt or dpkg (unattended upgrades, a parallel install) to finish.
APT_GET=(apt-get -o DPkg::Lock::Timeout=600)

services_dir=""
stop_services() {
    if [ -n "$services_dir" ]; then
        scripts/services.sh stop "$services_dir" || true
        rm -rf "$services_dir"
        services_dir=""
    fi
}
trap stop_services EXIT
trap 'echo; echo "interrupted"; exit 130' INT
trap 'exit 143' TERM
sqlite_pid=""
# The SQLite phase runs in a process group of its own (setsid): stopping it stops the servers its tests started
# too, which a background job's pytest could not do itself (it cannot get SIGINT, and SIGTERM skips teardown).
stop_sqlite_phase() {
    [ -z "$sqlite_pid" ] || kill -TERM -- "-$sqlite_pid" 2>/dev/null || true
}

# Services left behind by a run that was killed before its trap could run.
mkdir -p "$SERVICES_ROOT"
for dir in "$SERVICES_ROOT"/run-*; do
    [ -d "$dir" ] || continue
    owner=$(cat "$dir/owner.pid" 2>/dev/null || true)
    if [ -z "$owner" ] || ! kill -0 "$owner" 2>/dev/null; then
        scripts/services.sh stop "$dir" || true
        rm -rf "$dir"
    fi
done

# The live page test drives Debian's Chromium (Playwright never downloads a browser here).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "Installing Debian's chromium for tests/test_live_page.py"
        DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y chromium >/dev/null \
            || { "${APT_GET[@]}" update >/dev/null \
                && DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y chromium >/dev/null; } \
            || echo "could not install chromium: the live page tests will be skipped, and make test fails"
    else
        echo "/usr/bin/chromium is missing (install Debian's chromium as root): the live page tests will be" \
            "skipped, and make test fails"
    fi
fi

# The JavaScript clients' tests (tests/js/) run on Node.js; its npm installs them from tests/js/package-lock.json.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "Installing Debian's nodejs and npm for tests/js/"
        DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y nodejs npm >/dev/null \
            || { "${APT_GET[@]}" update >/dev/null \
                && DEBIAN_FRONTEND=noninteractive "${APT_GET[@]}" install -y nodejs npm >/dev/null; } \
            || echo "could not install nodejs: the JavaScript clients' tests will be skipped, and make test fails"
    else
        echo "node or npm is missing (install Debian's nodejs and npm as root): the JavaScript clients' tests" \
            "will be skipped, and make test fails"
    fi
fi

skips_dir=$(mktemp -d)
trap 'stop_sqlite_phase; stop_services; rm -rf "$skips_dir"' EXIT

header "Docs: mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$skips_dir/site"
docs_rc=$?
echo "docs: $(result "$docs_rc")"

# The two phases run side by side (each is mostly one process waiting on servers it started); the SQLite
# phase's output is kept in a file and shown after the PostgreSQL phase's, which is shown as it runs.
sqlite_log="$skips_dir/sqlite.log"
(unset DATABASE_URL REDIS_URL
    CHATTER_MODULE_SECONDS_OUT="$skips_dir/sqlite.seconds" \
    CHATTER_REQUIRE_COMPONENTS=browser,node CHATTER_SKIP_REPORT="$skips_dir/sqlite" \
        exec setsid "$PYTEST" "${WORKERS[@]}" "$@") \
    >"$sqlite_log" 2>&1 &
sqlite_pid=$!

header "Phase 2/2: pytest on PostgreSQL + Redis (phase 1, SQLite, runs beside it: its output follows)"
services_dir=$(mktemp -d "$SERVICES_ROOT/run-XXXXXX")
echo $$ >"$services_dir/owner.pid"
if scripts/services.sh start "$services_dir"; then
    # shellcheck disable=SC1091
    (source "$services_dir/env" && echo "DATABASE_URL=${DATABASE_URL%%:*}://…@${DATABASE_URL##*@}  REDIS_URL=$REDIS_URL" \
        && CHATTER_MODULE_SECONDS_OUT="$skips_dir/postgres.seconds" \
            CHATTER_REQUIRE_COMPONENTS=browser,node,postgresql,redis CHATTER_SKIP_REPORT="$skips_dir/postgres" \
            exec "$PYTEST" "${WORKERS[@]}" "$@")
    postgres_rc=$?
else
    echo "could not start PostgreSQL and Redis"
    postgres_rc=1
fi
stop_services

header "Phase 1/2: pytest on SQLite (in-memory channel layer)"
wait "$sqlite_pid"
sqlite_rc=$?
sqlite_pid=""
cat "$sqlite_log"
# Django drops the test database file but not SQLite's WAL sidecars.
for sidecar in var/chatter-test-*.sqlite3-wal var/chatter-test-*.sqlite3-shm; do
    [ -e "${sidecar%-*}" ] || rm -f "$sidecar"
done

# CHATTER_RECORD_MODULE_SECONDS=1: each module's seconds in both phases, added up, become the order of the next
# runs (tests/module_seconds.tsv: the longest modules first).
if [ -n "${CHATTER_RECORD_MODULE_SECONDS:-}" ] && [ -s "$skips_dir/sqlite.seconds" ] \
        && [ -s "$skips_dir/postgres.seconds" ]; then
    { echo "# seconds	module: both phases of make test added up (tests/conftest.py heaviest_first)"
      cat "$skips_dir/sqlite.seconds" "$skips_dir/postgres.seconds" | grep -v '^#' \
        | awk -F'\t' '{ took[$2] += $1 } END { for (m in took) printf "%.1f\t%s\n", took[m], m }' | sort -rn
    } >tests/module_seconds.tsv
    echo "tests/module_seconds.tsv written"
fi

header "Summary"
echo "Docs (mkdocs):       $(result "$docs_rc")"
echo "SQLite:              $(result "$sqlite_rc")$(skipped_components "$skips_dir/sqlite")"
echo "PostgreSQL + Redis:  $(result "$postgres_rc")$(skipped_components "$skips_dir/postgres")"
[ "$docs_rc" -eq 0 ] && [ "$sqlite_rc" -eq 0 ] && [ "$postgres_rc" -eq 0 ]
