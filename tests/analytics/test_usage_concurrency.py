"""Usage rollups under concurrency: parallel runs that book on one row (its first INSERT included), parallel
turns in shared conversations and parallel deletes lose no increment and subtract nothing twice.

Runs on SQLite and (with DATABASE_URL, as `make test`'s second phase does) on PostgreSQL, where the writers
really run in parallel and meet in INSERT … ON CONFLICT DO UPDATE."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from analytics.models import UsageRollup
from conversations.models import Message
from conversations.services import message_delete
from tests.analytics.usage import assert_usage_exact, totals
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db(transaction=True)

LINEAR = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}
RUNS = 40


def in_thread(function):
    def wrapped(*args):
        try:
            return function(*args)
        finally:
            connections.close_all()

    return wrapped


@pytest.mark.usefixtures("clear_of_midnight")  # every run on one day: its rows are that day's
def test_parallel_runs_on_one_row_lose_no_increment(alice, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = RUNS + 1

    @in_thread
    def standalone(i):
        execution = execution_create(ExecutionRequest(owner=alice, graph=LINEAR, message=f"run {i}"))
        return execution_run(execution_id=execution.pk).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(standalone, range(RUNS))) == ["completed"] * RUNS

    # Every run of the day on one set of dimensions: on its slot's row (UsageRollup.slot_of), 40 runs over at most
    # 16 rows, each made by whichever of its runs came first and added to by the others.
    rows = list(UsageRollup.objects.all())
    assert 1 < len(rows) <= UsageRollup.SLOTS
    assert len({(row.day, row.owner_id, row.provider, row.model, row.template_id) for row in rows}) == 1
    assert (sum(row.executions for row in rows), sum(row.llm_calls for row in rows)) == (RUNS, RUNS)
    assert_usage_exact()


def test_parallel_turns_and_deletes_keep_the_rollups_exact(alice, bob, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = RUNS + 1
    conversations = {
        user.pk: execution_run(execution_id=execution_create(ChatRequest(owner=user, message="hi")).pk).conversation_id
        for user in (alice, bob)
    }

    @in_thread
    def turn(i):
        user = (alice, bob)[i % 2]
        if i % 5 == 4:  # a standalone run now and then: its rows share no conversation lock with the turns
            execution = execution_create(ExecutionRequest(owner=user, graph=LINEAR, message=f"run {i}"))
        else:
            execution = execution_create(ChatRequest(owner=user, message=f"What is {i}*3?",
                                                     conversation_id=conversations[user.pk]))
        return execution_run(execution_id=execution.pk).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(turn, range(RUNS))) == ["completed"] * RUNS
    rows = assert_usage_exact()
    standalone = RUNS // 5
    assert totals(rows)["executions"] == RUNS + 2
    assert totals(rows)["messages"] == 2 * (RUNS - standalone + 2)

    # Half the messages deleted from parallel threads, each one twice: subtracted exactly once.
    doomed = list(Message.objects.filter(sequence__gt=2).order_by("?").values_list("pk", flat=True)[:RUNS])
    with ThreadPoolExecutor(max_workers=8) as pool:
        deleted = list(pool.map(in_thread(lambda pk: message_delete(message_id=pk)), doomed + doomed))
    assert deleted.count(True) == len(doomed)
    rows = assert_usage_exact()
    assert totals(rows)["messages"] == 2 * (RUNS - standalone + 2) - len(doomed)
    assert totals(rows)["executions"] == RUNS + 2


def test_reconcile_reports_no_drift_while_turns_commit_around_it(alice, settings):
    """The check reads every aggregate and its source rows in one snapshot: turns committing while it reads are
    either wholly in it or wholly out of it (it used to read them in separate statements and cry wolf)."""
    from analytics.services import aggregates_drift
    from workflows.services.runs import execution_run_now

    settings.CHATTER_MAX_CONCURRENT_RUNS = 100
    conversation = execution_run_now(ChatRequest(owner=alice, message="hello")).conversation_id
    done, reports = [], []

    @in_thread
    def turns(i):
        for n in range(8):
            execution_run_now(ChatRequest(owner=alice, message=f"What is {i}*{n}?",
                                          conversation_id=conversation if n % 2 else None))

    @in_thread
    def check():
        while not done:  # SQLite: each check holds the one write lock while it reads, so the turns get turns too
            reports.append(aggregates_drift())
            time.sleep(0.05)

    with ThreadPoolExecutor(4) as pool:
        checker = pool.submit(check)
        list(pool.map(turns, range(3)))
        done.append(True)
        checker.result()
    assert len(reports) >= 3 and all(report == [] for report in reports), [r for r in reports if r][:1]
    assert aggregates_drift() == []


def test_issue_46_runs_of_no_conversation_do_not_wait_on_one_rollup_row(alice, settings):
    """Two ending runs of one owner, model and day and no conversation (two gateway calls of one key): the second
    books its usage while the first's ending transaction is still open, without waiting on its row lock. On one
    row every call of a key took turns there, each holding it to its commit (B8: the servers half idle)."""
    from django.db import connection, transaction

    from analytics.services import execution_book
    from core.db import statements_run

    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    settings.CHATTER_MAX_CONCURRENT_RUNS = RUNS + 1
    runs: dict[int, object] = {}
    while len(runs) < 2:  # two runs whose ids pick different rows (a 16th of pairs would pick the same)
        execution = execution_run(execution_id=execution_create(ExecutionRequest(
            owner=alice, graph=LINEAR, message="hi")).pk)
        runs.setdefault(execution.pk.int % 16, execution)
    first, second = runs.values()
    booked = threading.Event()
    release = threading.Event()

    @in_thread
    def hold_first():
        with transaction.atomic():
            statements_run(*_booking(execution_book(execution=first, calls=[], messages=[])))
            booked.set()
            release.wait(10)
            transaction.set_rollback(True)

    @in_thread
    def book_second():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")
            statements_run(*_booking(execution_book(execution=second, calls=[], messages=[])))
            transaction.set_rollback(True)

    with ThreadPoolExecutor(2) as pool:
        holding = pool.submit(hold_first)
        assert booked.wait(10)
        try:
            pool.submit(book_second).result(15)  # (before: "canceling statement due to lock timeout")
        finally:
            release.set()
            holding.result(15)
    assert_usage_exact()


def _booking(statements: list) -> tuple:
    return statements[-1], statements[:-1]
