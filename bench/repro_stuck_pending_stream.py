"""Reproduction (found by B7): a streamed chat turn whose run thread cannot get a database connection answers
HTTP 200 with an empty event stream and leaves its execution `pending` for good, with the user message saved
and no event, no error, no assistant message.

Under B7's burst (200 turns on 2 daphne processes) this happens because each in-flight request holds one
PostgreSQL connection (Django under ASGI runs every request's sync code in a thread of its own, and connections
are per thread) and each streamed run opens one more in its own thread, with no bound: the servers reached
PostgreSQL's max_connections (197 usable of 200 here; PostgreSQL's default is 100) and the runs that could not
connect were lost. Here the same is made deterministic: this script holds every free connection slot but one,
so the view's thread gets the last slot and the run's thread gets none.

    .venv/bin/python bench/repro_stuck_pending_stream.py

Exit status 1 while the bug is there (the run is still pending after the stream ended), 0 once a run that cannot
start ends visibly (a terminal event, or an error status, and no orphan pending row).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BenchRun, api_token, log


def main() -> int:
    import httpx
    import psycopg

    with BenchRun("repro") as run:
        services = run.services()
        url = services["DATABASE_URL"]
        database = run.database("postgres", DATABASE_URL=url, REDIS_URL=services["REDIS_URL"])
        server = run.daphne(database)
        token = api_token(server, database)
        client = httpx.Client(base_url=server.base_url, timeout=30, headers={"Authorization": f"Token {token}"})
        client.post("/api/v1/chat/", json={"message": "warm-up"}).raise_for_status()

        held = []
        try:
            while True:
                try:
                    held.append(psycopg.connect(url, connect_timeout=5))
                except psycopg.OperationalError:
                    break
            # One free slot, and daphne's own: the warm-up request's thread ended, so its connection is being
            # garbage-collected; wait until PostgreSQL shows it gone, then free exactly one slot.
            time.sleep(1)
            held.pop().close()
            log(f"holding {len(held)} connections: one slot left for the server")
            with client.stream("POST", "/api/v1/chat/", json={"message": "hello there", "stream": True},
                               headers={"Accept": "text/event-stream"}) as response:
                status = response.status_code
                body = response.read().decode()
        finally:
            for connection in held:
                connection.close()
        time.sleep(3)  # anything that would still finish the run has had time to
        with psycopg.connect(url) as connection:
            rows = connection.execute(
                "SELECT e.id, e.status, e.mode, (SELECT count(*) FROM workflows_executionevent v WHERE "
                "v.execution_id = e.id), (SELECT string_agg(m.role, ',' ORDER BY m.sequence) FROM "
                "conversations_message m WHERE m.execution_id = e.id) FROM workflows_workflowexecution e "
                "WHERE e.mode = 'stream'").fetchall()
        frames = [line for line in body.splitlines() if line.startswith("event:")]
        print(f"HTTP {status}; SSE frames received: {len(frames)} {frames[:3]}")
        for execution_id, state, mode, events, roles in rows:
            print(f"execution {execution_id}: status {state}, mode {mode}, {events} persisted events, "
                  f"messages: {roles}")
        stuck = [row for row in rows if row[1] == "pending"]
        if stuck:
            print("BUG REPRODUCED: the stream ended (HTTP 200, no terminal event) and the run stays pending with its "
                  "user message saved; daphne's log says why:")
            tail = [line for line in server.log_path.read_text().splitlines() if "Error" in line][-2:]
            print("  " + "\n  ".join(tail))
            return 1
        print("not reproduced: the run ended visibly")
        return 0


if __name__ == "__main__":
    sys.exit(main())
