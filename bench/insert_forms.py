"""How a named multi-row INSERT sends its rows to PostgreSQL (core.db.Insert): as one JSON parameter
(`json_populate_recordset`, what it does), as one array per column (`unnest`), or as a row of placeholders per row
(`VALUES`), for the node rows' upsert of 1, 3 and 5 rows; median µs per call of this process's CPU and of wall time
(the server's work included), interleaved, in a transaction rolled back. Needs DATABASE_URL (PostgreSQL).

    source var/services-NAME/env && .venv/bin/python -m bench.insert_forms [--reps 1500]
"""
from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from decimal import Decimal

from bench import chatter_calls
from bench.chatter_servers import chatter_database
from bench.processes import BenchRun, log, run_main
from bench.stats import median, table


def forms():
    """(name, rows → (sql, params)) for each way of sending the rows."""
    from django.db import connection

    from workflows.statements import nodes_upsert as insert

    fields = [connection.ops.quote_name(insert.model._meta.get_field(name).column) for name in insert.columns]
    models = [insert.model._meta.get_field(name) for name in insert.columns]

    def prepared(rows):
        return [[None if row[name] is None else field.get_db_prep_save(row[name], connection) for row in rows]
                for name, field in zip(insert.columns, models)]

    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in models)
    unnest_sql = insert.sql.replace("VALUES {values}", f"SELECT * FROM unnest({arrays})")
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return [
        ("json (one parameter)", insert.bound),
        ("unnest (an array per column)", lambda rows: (unnest_sql, prepared(rows))),
        ("VALUES (a row of placeholders per row)", lambda rows: (
            insert.sql.format(values=", ".join([row] * len(rows))),
            [value for values in zip(*prepared(rows)) for value in values])),
    ]


def node_rows(execution_id, count: int) -> list[dict]:
    from django.utils import timezone

    now = timezone.now()
    return [{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "execution_id": execution_id,
             "index": index, "node_id": f"node{index}", "node_type": "model", "status": "completed",
             "started_at": now, "completed_at": now, "duration_ms": 3, "cost": Decimal("0.000123"), "llm_calls": 1,
             "tool_calls": 0, "error_message": "", "output": {"messages": index, "content": "hi"}}
            for index in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1500)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url or not url.startswith("postgres"):
        raise SystemExit("insert_forms needs DATABASE_URL of a PostgreSQL (source var/services-NAME/env)")
    with BenchRun("insert_forms") as run:
        database = chatter_database(run, "postgres", DATABASE_URL=url)
        chatter_calls.django_setup(database.env)
        from django.db import connection, transaction

        sides = forms()
        results = []
        for count in (1, 3, 5):
            times: dict[str, list] = {name: [] for name, _ in sides}
            with transaction.atomic():
                execution_id = uuid.uuid4()  # the foreign key is checked at the commit, which never comes
                with connection.cursor() as cursor:
                    for _ in range(args.reps):
                        for name, bound in random.sample(sides, len(sides)):
                            rows = node_rows(execution_id, count)
                            cpu, wall = time.process_time(), time.perf_counter()
                            cursor.execute(*bound(rows))
                            cursor.fetchall()
                            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
                transaction.set_rollback(True)
            for name, _ in sides:
                kept = times[name][100:]  # after psycopg prepared them
                results.append([f"{count}", name, f"{median([c for c, _ in kept]) * 1e6:.0f}",
                                f"{median([w for _, w in kept]) * 1e6:.0f}"])
        log(f"PostgreSQL, {args.reps} interleaved calls of each form per row count")
        print(table(results, ["rows", "form", "client CPU µs", "wall µs"]))
    return 0


if __name__ == "__main__":
    run_main(main)
