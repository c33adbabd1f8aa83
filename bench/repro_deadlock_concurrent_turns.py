"""Reproduction (found by B7 with enough connections): concurrent chat turns of one user deadlock on PostgreSQL.

Status 2026-11-21: reproduced at 07:53 (56 of 64 turns, HEAD 3644a46 plus that moment's uncommitted working
tree); not at 08:10 with the working tree of then, nor at HEAD alone. Kept to re-check the hazard below.

Turns run through the services the chat view calls (`execution_create`, then `execution_run`), from 16 threads in
this one process, for one user, on PostgreSQL (scripts/services.sh). PostgreSQL detects deadlocks and kills one
transaction of each cycle, so turns fail with "deadlock detected": at `execution_create` (no run), or inside
`execution_run` / `execution_finish` (a run left `running` with no terminal event, and a user message without
its assistant message).

The lock orders that crossed (PostgreSQL's DETAIL lines, B7 run of 2026-11-21 07:52):
- execution_create: `_run_slot_take` locks the owner's auth_user row FOR UPDATE, then message_save locks the
  conversation row FOR UPDATE;
- execution_finish: message_save locks the conversation row, recorder.audit takes the audit chain's advisory
  lock and inserts an AuditEvent whose actor is the owner: the foreign key check takes FOR KEY SHARE on the
  same auth_user row, which conflicts with FOR UPDATE;
- other turns queue on the advisory lock while holding their own conversation / transaction locks.
So one transaction holds the user row and waits for a conversation (or the chain), another holds those and waits
for the user row.

    .venv/bin/python bench/repro_deadlock_concurrent_turns.py [--threads 16] [--turns 64] [--conversations 2]

Exit status 1 when any turn failed with a deadlock, 0 otherwise.
"""
from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BenchRun, django_setup, log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--turns", type=int, default=64)
    parser.add_argument("--conversations", type=int, default=2)
    args = parser.parse_args()

    with BenchRun("repro-deadlock") as run:
        services = run.services()
        database = run.database("postgres", DATABASE_URL=services["DATABASE_URL"], REDIS_URL=services["REDIS_URL"],
                                CHATTER_MAX_CONCURRENT_RUNS=10000, CHATTER_LOCAL_TOKEN_DELAY_MS=0)
        django_setup(database)
        from django.contrib.auth import get_user_model
        from django.db import OperationalError, connection

        from workflows.models import WorkflowExecution
        from workflows.services import execution_create, execution_run

        user = get_user_model().objects.get(username="bench")
        conversations = []
        for c in range(args.conversations):
            first = execution_create(owner=user, chat=True, mode="sync", message=f"conversation {c}", config={})
            execution_run(execution_id=first.pk)
            conversations.append(first.conversation_id)
        connection.close()

        failures: dict[str, int] = {}
        lock = threading.Lock()

        def turn(i: int) -> None:
            where = "execution_create"
            try:
                execution = execution_create(owner=user, chat=True, mode="sync", message=f"What is {i}*7?",
                                             conversation_id=conversations[i % len(conversations)], config={})
                where = "execution_run"
                execution_run(execution_id=execution.pk)
            except OperationalError as exc:
                key = f"{where}: {str(exc).splitlines()[0]}"
                with lock:
                    failures[key] = failures.get(key, 0) + 1
            finally:
                connection.close()

        log(f"{args.turns} turns from {args.threads} threads, one user, {args.conversations} conversations")
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(turn, range(args.turns)))
        stuck = WorkflowExecution.objects.exclude(status__in=WorkflowExecution.TERMINAL).count()
        for key, n in sorted(failures.items(), key=lambda kv: -kv[1]):
            print(f"{n:4d} turns failed at {key}")
        print(f"runs left pending/running: {stuck}")
        deadlocks = sum(n for key, n in failures.items() if "deadlock" in key)
        print("BUG REPRODUCED: deadlocks between concurrent turns" if deadlocks else "no deadlock this time")
        return 1 if deadlocks else 0


if __name__ == "__main__":
    sys.exit(main())
