"""The database statements and transactions of one sync chat turn are bounded, so they cannot
silently grow: with one model call at most 3 transactions and 20 statements, with one tool call (two model
calls) at most 4 and 30 (the issue's bound is 5), on SQLite and PostgreSQL, in a new conversation and in one that
goes on.

A run writes only before it waits and when it ends (workflows/recorder.py). With one model call: the request
writes the run already claimed, with the user message (1: conversation, message, the run under the owner's
limit); before the model call the nodes so far and their events (2); the end writes the LLM call, the last
nodes, the run's status and counters, the reply, every aggregate, the events and the audit rows (3). A tool call
adds the write before the second model call, with the first call and the tools node (a built-in tool does not
wait, so nothing is written before it runs)."""
import re
import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from engine.local_model import LocalChatModel
from workflows.models import ExecutionEvent
from workflows.recorder import ExecutionRecorder
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db
# "hello" makes no tool call, the arithmetic one makes one (two model calls): (statements, transactions) at most.
BOUNDS = {"hello": (20, 3), "What is 12*7?": (30, 4)}
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


@pytest.mark.parametrize("conversation", ["new", "going on"])
@pytest.mark.parametrize("message", sorted(BOUNDS))
def test_a_sync_chat_turn_stays_within_its_statements_and_transactions(alice, message, conversation):
    warm_up = execution_run_now(ChatRequest(owner=alice, message="warm up"))  # caches, prices
    going_on = {"conversation_id": warm_up.conversation_id} if conversation == "going on" else {}

    with CaptureQueriesContext(connection) as queries:
        execution = execution_run_now(ChatRequest(owner=alice, message=message, **going_on))

    assert execution.status == "completed" and execution.llm_calls == (2 if "12*7" in message else 1)
    statements, transactions, shown = statements_and_transactions([q["sql"] for q in queries.captured_queries])
    most_statements, most_transactions = BOUNDS[message]
    assert statements <= most_statements and transactions <= most_transactions, (
        f"{statements} statements in {transactions} transactions:\n" + "\n".join(shown))


def test_answering_a_sync_turn_reads_nothing_back(api):
    """The 201 is rendered from the ended run, its conversation and its messages as the run left them in memory:
    after the terminal transaction (whose last write adds to the usage rollups and the template's analytics) the
    request runs no statement."""
    api.post("/api/v1/chat/", {"message": "warm up"}, format="json")

    with CaptureQueriesContext(connection) as queries:
        response = api.post("/api/v1/chat/", {"message": "hello"}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["conversation"]["message_count"] == 2 and body["execution"]["status"] == "completed"
    assert body["conversation"]["total_tokens"] == body["execution"]["total_tokens"] > 0
    sqls = [q["sql"] for q in queries.captured_queries]
    ending = max(i for i, sql in enumerate(sqls) if sql.startswith('UPDATE "workflows_workflowexecution" SET "status"'))
    # the terminal transaction books the run (the usage rollups) and holds its audit rows: appended (SQLite) or
    # queued for the chain (PostgreSQL, riding on the statement of the run's trace)
    assert any('INSERT INTO "analytics_usagerollup"' in sql for sql in sqls[ending:])
    assert any('INSERT INTO "audit_auditevent"' in sql or 'INSERT INTO "audit_pendingauditevent"' in sql
               for sql in sqls[ending:])
    last_write = max(i for i, sql in enumerate(sqls) if sql.split()[0].upper() in ("INSERT", "UPDATE", "WITH"))
    after = [sql for sql in sqls[last_write + 1:] if sql.split()[0].upper() not in ("RELEASE", "COMMIT")]
    assert after == [], after


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_the_write_before_the_first_model_call_is_one_statement_and_its_own_transaction(
        alice, monkeypatch):
    """A plain turn's write before its model call (the nodes so far, their events) rides on one statement, which
    PostgreSQL runs atomically by itself: no BEGIN and COMMIT around it (two round trips fewer), and so does the
    turn's creation in a new conversation. Every other write of the turn is a transaction; the statement's events
    are on disk when they are published. (That write is made on a writer thread as the call goes out:
    workflows.writer. Its statements are followed there too.)"""
    execution_run_now(ChatRequest(owner=alice, message="warm up"))
    ran = []
    published_with_rows = []
    write_held = ExecutionRecorder.write_held

    def watched(recorder, **kwargs):  # once a write's events are published, its rows are readable
        write_held(recorder, **kwargs)
        seq = recorder.seq
        transaction.on_commit(lambda: published_with_rows.append(
            ExecutionEvent.objects.filter(execution=recorder.execution, seq=seq).exists()))

    def record(execute, sql, params, many, context):
        ran.append((sql.split()[0].upper(), connection.in_atomic_block, "workflows_executionevent" in sql))
        return execute(sql, params, many, context)

    flush, here, taken = ExecutionRecorder._flush, threading.get_ident(), threading.Event()

    def flush_watched(recorder):  # on a writer thread (or on this one, where `record` already follows it)
        if threading.get_ident() == here:
            return flush(recorder)
        taken.set()
        with connection.execute_wrapper(record):
            flush(recorder)

    stream = LocalChatModel._stream

    def answered_after_taken(model, *args, **kwargs):  # as a provider's answer comes: after a writer took the write
        taken.wait(timeout=5)  # (one that comes at once leaves the write to the run's end: test_write_behind)
        yield from stream(model, *args, **kwargs)

    monkeypatch.setattr(ExecutionRecorder, "write_held", watched)
    monkeypatch.setattr(ExecutionRecorder, "_flush", flush_watched)
    monkeypatch.setattr(LocalChatModel, "_stream", answered_after_taken)
    with connection.execute_wrapper(record):
        execution = execution_run_now(ChatRequest(owner=alice, message="hello"))

    assert execution.status == "completed"
    writes_outside = [(word, events) for word, atomic, events in ran if not atomic and word not in ("SELECT",)]
    # the turn's creation (its new conversation, message and run: run_write), then the nodes' upsert with the events
    assert writes_outside == [("WITH", False), ("WITH", True)], ran
    assert published_with_rows == [True, True]  # the write before the call, and the end
