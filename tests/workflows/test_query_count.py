"""The database statements and transactions of one sync chat turn are pinned, so they cannot silently grow
(issue 7). If a change moves them, update the figures on purpose and say why in the commit.

Where a turn's statements go (SQLite; PostgreSQL adds one advisory lock per audit row): execution_create (template,
price, the owner's run slot, conversation, execution, the user message and its aggregates), the claim and one read
of the run, memory's history, the first write (workflow_started, the nodes before the model and the model's start,
the `execution.started` audit row), one price read, per LLM call its ledger row + the execution's counters + its
event, per tool call its row + event + audit row, and the terminal transaction (status, the last nodes, the
assistant message and every aggregate, the terminal events and audit row)."""
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db
# A new conversation; "hello" makes no tool call, the arithmetic one makes one (two model calls).
# (statements, transactions) per database.
PINNED = {
    "sqlite": {"hello": (38, 5), "What is 12*7?": (51, 9)},
    "postgresql": {"hello": (40, 5), "What is 12*7?": (54, 9)},
}
_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?([a-z0-9_]+)', re.IGNORECASE)


def statements_and_transactions(sqls: list[str]) -> tuple[int, int, list[str]]:
    """Statements other than transaction control; transactions: the outermost atomic blocks (savepoints here: the
    test runs inside a transaction) and each write outside them (autocommitted on its own). And a readable list."""
    statements = transactions = depth = 0
    shown = []
    for sql in sqls:
        word = sql.split()[0].upper()
        if word == "SAVEPOINT":
            transactions += depth == 0
            depth += 1
        elif word == "RELEASE" or sql.upper().startswith("ROLLBACK TO SAVEPOINT"):
            depth -= word == "RELEASE"
        else:
            statements += 1
            transactions += depth == 0 and word != "SELECT"
            table = _TABLE.search(sql)
            shown.append(f"{'  ' * depth}{word} {table.group(1) if table else sql[:60]}")
            continue
        shown.append(f"{'  ' * max(depth - (word == 'SAVEPOINT'), 0)}{word}")
    return statements, transactions, shown


@pytest.mark.parametrize("message", sorted(PINNED["sqlite"]))
def test_a_sync_chat_turn_makes_a_pinned_number_of_statements_and_transactions(alice, message):
    execution_run_now(owner=alice, chat=True, message="warm up")  # caches, prices

    with CaptureQueriesContext(connection) as queries:
        execution = execution_run_now(owner=alice, chat=True, message=message)

    assert execution.status == "completed"
    statements, transactions, shown = statements_and_transactions([q["sql"] for q in queries.captured_queries])
    assert (statements, transactions) == PINNED[connection.vendor][message], "\n".join(shown)
