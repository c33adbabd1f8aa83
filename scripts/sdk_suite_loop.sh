#!/usr/bin/env bash
# LangGraph's SDK integration suite (tests/agent_server/test_sdk_integration_suite.py: upstream's suite against a
# real daphne) N times in a row on SQLite, then N times on PostgreSQL + Redis (started here with
# scripts/services.sh, stopped on exit). One line per run: its outcome, the suite's tally and what did not pass;
# then a summary. Exit status non-zero when any run failed.
#
#   scripts/sdk_suite_loop.sh N            (default 10)
#   SDK_SUITE_DATABASES=sqlite scripts/sdk_suite_loop.sh 3     one database only (sqlite or postgresql)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

runs=${1:-10}
case "$runs" in
    '' | *[!0-9]* | 0) echo "usage: $0 [N>0]" >&2; exit 2 ;;
esac
databases=${SDK_SUITE_DATABASES:-sqlite postgresql}
PYTEST=.venv/bin/pytest
SUITE=tests/agent_server/test_sdk_integration_suite.py
logs=$(mktemp -d /tmp/sdk-suite-loop.XXXXXX)
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

# What the suite's table (test-artifacts/sdk-integration-suite-<vendor>.md) says: its tally, and each test that
# did not pass.
tally() {
    local table=$1
    [ -s "$table" ] || { echo "no tally (the suite wrote no table)"; return; }
    local head failing
    head=$(sed -n '1s/^# //p' "$table" | sed 's/ (langgraph-sdk.*//')
    failing=$(grep -E '^\| `[^`]+` \| (failed|error|skipped) ' "$table" | sed -E 's/^\| `([^`]+)` \| ([a-z]+) .*/\1 (\2)/' |
        paste -sd ',' - | sed 's/,/, /g')
    echo "$head${failing:+; not passed: $failing}"
}

failures=0
total=0
summary=()
for database in $databases; do
    case "$database" in
        sqlite) vendor=sqlite ;;
        postgresql)
            vendor=postgresql
            services_dir=$(mktemp -d "$logs/services.XXXXXX")
            if ! scripts/services.sh start "$services_dir"; then
                echo "could not start PostgreSQL and Redis"
                exit 1
            fi
            ;;
        *) echo "unknown database $database (sqlite or postgresql)" >&2; exit 2 ;;
    esac
    passed=0
    for run in $(seq 1 "$runs"); do
        log="$logs/$database-$run.log"
        table="test-artifacts/sdk-integration-suite-$vendor.md"
        rm -f "$table"
        started=$(date +%s)
        if [ "$database" = sqlite ]; then
            (unset DATABASE_URL REDIS_URL; exec "$PYTEST" "$SUITE" -q -p no:cacheprovider) >"$log" 2>&1
        else
            # shellcheck disable=SC1091
            (source "$services_dir/env" && exec "$PYTEST" "$SUITE" -q -p no:cacheprovider) >"$log" 2>&1
        fi
        rc=$?
        took=$(($(date +%s) - started))
        total=$((total + 1))
        if [ "$rc" -eq 0 ]; then
            outcome=passed
            passed=$((passed + 1))
        else
            outcome="FAILED (exit $rc, log $log)"
            failures=$((failures + 1))
        fi
        printf '%-10s run %2d/%d  %4ds  %s: %s\n' "$database" "$run" "$runs" "$took" "$outcome" "$(tally "$table")"
    done
    summary+=("$database: $passed of $runs runs passed")
    stop_services
done

joined=$(printf '%s; ' "${summary[@]}")
if [ "$failures" -eq 0 ]; then
    echo "summary: ${joined}all $total runs passed (logs: $logs)"
else
    echo "summary: ${joined}$failures of $total runs FAILED (logs: $logs)"
fi
[ "$failures" -eq 0 ]
