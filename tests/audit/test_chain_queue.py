"""A run never touches the audit chain (PostgreSQL): its rows are queued in its own transaction and appended by the
process's chainer once it commits (or first by the next writer that holds the chain); a read of the trail appends
the queue first. The chain stays one linear, verifiable sequence with every row in it."""
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.utils import timezone

from audit import statements
from audit.models import AuditEvent, PendingAuditEvent
from audit.selectors import audit_chain_verify
from audit.services import (CHAIN_LOCK_KEY, audit_fields, audit_queue, audit_queue_along, audit_queue_flush,
                            audit_queued, audit_record)
from core.db import statements_run
from tests import launcher
from tests.factories import UserFactory

pytestmark = pytest.mark.postgres


class ChainHeld:
    """Another session holding the chain (a transaction with its advisory lock) until `release()`."""

    def __init__(self) -> None:
        self._taken, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold)
        self._thread.start()
        assert self._taken.wait(10)

    def _hold(self) -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statements.CHAIN_LOCK, [CHAIN_LOCK_KEY])
                self._taken.set()
                self._release.wait(30)
        finally:
            connections.close_all()

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)


def eventually(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def in_thread(work, timeout: float = 10.0):
    """Run `work` on a thread with its own connection; its result, or raise if it did not finish in `timeout`."""
    results, errors = [], []

    def target():
        try:
            results.append(work())
        except Exception as error:  # noqa: BLE001 - raised below
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not finish in {timeout} s (it waited for the chain)"
    if errors:
        raise errors[0]
    return results[0] if results else None


@pytest.mark.django_db(transaction=True)
def test_rows_written_while_the_chain_is_held_are_queued_then_appended_once_it_is_free():
    user = UserFactory()
    audit_record(action="test.before", actor=user)
    held = ChainHeld()
    try:
        in_thread(lambda: audit_queue([audit_fields(action="test.queued", actor=user, data={"n": 1}),
                                       audit_fields(action="test.queued", actor=user, data={"n": 2})]))
        assert list(PendingAuditEvent.objects.values_list("action", "data")) == [
            ("test.queued", {"n": 1}), ("test.queued", {"n": 2})]
        assert not AuditEvent.objects.filter(action="test.queued").exists()
    finally:
        held.release()

    # The chainer, woken when the queueing transaction committed, appends them as soon as the chain is free.
    assert eventually(lambda: not PendingAuditEvent.objects.exists())
    rows = list(AuditEvent.objects.order_by("id"))
    assert [(row.action, row.data) for row in rows] == [
        ("test.before", {}), ("test.queued", {"n": 1}), ("test.queued", {"n": 2})]
    assert {row.actor_id for row in rows} == {user.pk}
    assert audit_chain_verify().valid


@pytest.mark.django_db(transaction=True)
def test_rows_are_queued_even_when_the_chain_is_free_and_the_chainer_appends_them_after_the_commit():
    user = UserFactory()
    with transaction.atomic():
        audit_queue([audit_fields(action="test.queued", actor=user)])
        assert not AuditEvent.objects.exists()  # nothing of the chain is read or locked in the writer's transaction

    assert eventually(lambda: AuditEvent.objects.filter(action="test.queued").exists())
    assert not PendingAuditEvent.objects.exists()
    assert audit_chain_verify().valid


@pytest.mark.django_db(transaction=True)
def test_rows_queued_by_a_statement_alone_wake_the_chainer_once_they_are_in(monkeypatch):
    """A gateway call's one write is a statement outside any transaction (committed as it runs): the chainer is
    woken after it (audit_queued), when its rows are in the queue, never before they are."""
    import audit.services

    wake, in_queue_at_wake = audit.services._chainer_wake, []

    def noted() -> None:
        in_queue_at_wake.append(PendingAuditEvent.objects.filter(action="test.alone").count()
                                + AuditEvent.objects.filter(action="test.alone").count())
        wake()

    monkeypatch.setattr(audit.services, "_chainer_wake", noted)
    user = UserFactory()

    statements_run(audit_queue_along([audit_fields(action="test.alone", actor=user)]))
    audit_queued()

    assert in_queue_at_wake == [1]
    assert eventually(lambda: AuditEvent.objects.filter(action="test.alone").exists())
    assert audit_chain_verify().valid


@pytest.mark.django_db(transaction=True)
def test_a_queue_left_behind_is_appended_first_by_the_next_writer_with_its_own_times():
    """Rows committed to the queue by a process that died before its chainer ran."""
    user = UserFactory()
    then = timezone.now().replace(microsecond=123456) - timezone.timedelta(minutes=5)
    statements.pending_insert([{"created_at": then, **audit_fields(action="test.left", actor=user, ip="::ffff:10.0.0.7",
                                                                  data={"i": i})} for i in range(3)])

    audit_record(action="test.next", actor=user)

    assert not PendingAuditEvent.objects.exists()
    rows = list(AuditEvent.objects.order_by("id"))
    assert [row.action for row in rows] == ["test.left"] * 3 + ["test.next"]
    assert [row.data for row in rows[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert {row.created_at for row in rows[:3]} == {then} and rows[3].created_at > then
    assert rows[0].ip == "::ffff:10.0.0.7"
    assert audit_chain_verify().valid


@pytest.mark.django_db(transaction=True)
def test_a_queued_row_rolls_back_with_its_transaction():
    held = ChainHeld()
    try:
        def queue_then_fail():
            with transaction.atomic():
                audit_queue([audit_fields(action="test.rolled_back")])
                raise RuntimeError("the action failed")

        with pytest.raises(RuntimeError):
            in_thread(queue_then_fail)
    finally:
        held.release()
    assert audit_queue_flush() == 0
    assert not AuditEvent.objects.exists() and not PendingAuditEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_audit_verify_appends_the_queue_before_it_checks_the_chain(capsys):
    statements.pending_insert([{"created_at": timezone.now(), **audit_fields(action="test.left")} for _ in range(2)])

    call_command("audit_verify")

    assert capsys.readouterr().out.startswith("OK: 2 audit rows verified")
    assert not PendingAuditEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_ends_while_the_chain_is_held_and_its_rows_reach_the_chain(api, alice):
    """Through the API: a chat turn with a tool call completes without waiting for a writer holding the chain;
    its audit rows follow in order once the chain is free."""
    held = ChainHeld()
    try:
        turn = in_thread(lambda: api.post("/api/v1/chat/", {"message": "What is 12*7?"}).json(), timeout=30)
        assert turn["execution"]["status"] == "completed"
        execution_id = turn["execution"]["id"]
        assert PendingAuditEvent.objects.filter(target_id=execution_id).exists()
    finally:
        held.release()

    assert eventually(lambda: not PendingAuditEvent.objects.exists())
    rows = list(AuditEvent.objects.filter(target_id=execution_id).order_by("id"))
    assert [row.action for row in rows] == ["execution.started", "tool.called", "execution.completed"]
    assert {row.actor_id for row in rows} == {alice.pk}
    assert rows[2].data["total_tokens"] == turn["execution"]["total_tokens"]
    assert audit_chain_verify().valid


@pytest.mark.django_db(transaction=True)
def test_the_audit_api_shows_a_runs_rows_as_soon_as_it_has_ended(api, alice):
    """A read of the trail appends what runs queued first: the chainer's pause is never visible."""
    turn = api.post("/api/v1/chat/", {"message": "What is 12*7?"}).json()
    execution_id = turn["execution"]["id"]

    listed = api.get("/api/v1/audit/events/", {"target_id": execution_id, "ordering": "id"}).json()

    assert [row["action"] for row in listed["results"]] == ["execution.started", "tool.called",
                                                            "execution.completed"]
    assert not PendingAuditEvent.objects.filter(target_id=execution_id).exists()


WRITERS, EACH = 8, 25


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_queue_and_every_row_ends_in_one_linear_chain():
    barrier = threading.Barrier(WRITERS)
    errors = []

    def write(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(EACH):
                with transaction.atomic():
                    audit_queue([audit_fields(action="test.concurrent", target_id=f"{n}-{i}")])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert eventually(lambda: not PendingAuditEvent.objects.exists())
    rows = list(AuditEvent.objects.values_list("prev_hash", "target_id"))
    assert len(rows) == WRITERS * EACH
    assert len({prev for prev, _ in rows}) == WRITERS * EACH  # no fork
    assert {target for _, target in rows} == {f"{n}-{i}" for n in range(WRITERS) for i in range(EACH)}
    result = audit_chain_verify(batch_size=17)
    assert (result.valid, result.checked) == (True, WRITERS * EACH)


@pytest.mark.django_db(transaction=True)
def test_a_command_that_ran_a_run_leaves_its_rows_in_the_chain_when_it_exits(alice, tmp_path):
    """The process's chainer appends what it queued before the process ends (no writer has to come by later)."""
    import sys

    from tests.fixtures_server import ROOT, server_env
    from workflows.models import WorkflowExecution

    done = launcher.run([sys.executable, "manage.py", "chat", "What is 12*7?", "--user", alice.username],
                        cwd=ROOT, env=server_env(tmp_path), timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    execution = WorkflowExecution.objects.get()
    assert not PendingAuditEvent.objects.exists()
    rows = list(AuditEvent.objects.filter(target_id=str(execution.pk)).order_by("id"))
    assert [row.action for row in rows] == ["execution.started", "tool.called", "execution.completed"]
    assert audit_chain_verify().valid
