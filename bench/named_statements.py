"""Why the run path's statements in workflows/statements.py are named SQL and not the ORM: each against the ORM call
that writes or reads the same rows, median µs per call, interleaved, on a fresh migrated database (SQLite, or
PostgreSQL with DATABASE_URL), in one process.

    .venv/bin/python -m bench.named_statements [--reps 500]
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import time
from decimal import Decimal

from bench import chatter_calls
from bench.chatter_servers import chatter_database
from bench.processes import BenchRun, log, run_main
from bench.stats import median, table


def pairs(user):
    """(what, named statement, ORM) for each statement a turn runs."""
    from django.db.models import F
    from django.utils import timezone

    from workflows import statements
    from workflows.models import ExecutionEvent, NodeExecution, WorkflowExecution
    from workflows.services.run_requests import ChatRequest
    from workflows.services.runs import execution_run_now

    execution = execution_run_now(ChatRequest(owner=user, message="hello"))
    seq = itertools.count(1_000)

    def node(index):
        return {"execution_id": execution.pk, "index": index, "node_id": "model", "node_type": "model",
                "status": "completed", "started_at": timezone.now(), "completed_at": timezone.now(),
                "duration_ms": 3, "output": {"content": "hi"}, "error_message": "", "prompt_tokens": 7,
                "completion_tokens": 5, "total_tokens": 12, "cost": Decimal("0.0001"), "llm_calls": 1,
                "tool_calls": 0}

    fields = [name for name in statements.NODE_COLUMNS if name not in ("execution_id", "index")]

    def events():
        now = timezone.now()
        return [{"execution_id": execution.pk, "seq": next(seq), "event": "node_completed",
                 "data": {"node_id": "model"}, "created_at": now} for _ in range(3)]

    ended = {"status": "running", "completed_at": timezone.now(), "execution_time_ms": 5,
             "output_data": {"content": "hi"}, "error_type": "", "error_message": "", "stream_progress": {}}
    added = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": Decimal("0.000001"),
             "llm_calls": 1}
    return [
        ("node rows' upsert, 2 rows, ids returned",
         lambda: statements.statements_run(statements.nodes_upsert.bound([node(1), node(2)]), fetch=True),
         lambda: NodeExecution.objects.bulk_create([NodeExecution(**node(1)), NodeExecution(**node(2))],
                                                   update_conflicts=True, unique_fields=("execution", "index"),
                                                   update_fields=fields)),
        ("events' INSERT, 3 rows",
         lambda: statements.statements_run(statements.events_insert.bound(events())),
         lambda: ExecutionEvent.objects.bulk_create([ExecutionEvent(**row) for row in events()])),
        ("a run's end (EXECUTION_FINISH)",
         lambda: statements.execution_finish(execution.pk, from_status="running", ended=ended, tool_calls=0,
                                             added=added),
         lambda: WorkflowExecution.objects.filter(pk=execution.pk, status="running").update(
             **ended, tool_calls=0, **{name: F(name) + value for name, value in added.items()})),
        ("a run's counters (EXECUTION_COUNTERS_ADD)",
         lambda: statements.execution_counters_add(execution.pk, tool_calls=0, added=added),
         lambda: WorkflowExecution.objects.filter(pk=execution.pk).update(
             tool_calls=0, **{name: F(name) + value for name, value in added.items()})),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=500)
    args = parser.parse_args()
    with BenchRun("named_statements") as run:
        url = os.environ.get("DATABASE_URL")  # None: SQLite
        database = chatter_database(run, "postgres" if url else "sqlite", DATABASE_URL=url)
        chatter_calls.django_setup(database.env)
        from django.db import connection, transaction

        user = chatter_calls.bench_user()
        rows = []
        for what, named, orm in pairs(user):
            times = {"named": [], "orm": []}
            for _ in range(args.reps):
                for side, call in random.sample([("named", named), ("orm", orm)], 2):
                    with transaction.atomic():
                        started = time.perf_counter()
                        call()
                        times[side].append(time.perf_counter() - started)
            named_us, orm_us = median(times["named"]) * 1e6, median(times["orm"]) * 1e6
            rows.append([what, f"{named_us:.0f}", f"{orm_us:.0f}", f"{orm_us - named_us:+.0f}"])
        log(f"{connection.vendor}, {args.reps} interleaved calls of each")
        print(table(rows, ["statement", "named µs", "ORM µs", "ORM - named"]))
    return 0


if __name__ == "__main__":
    run_main(main)
