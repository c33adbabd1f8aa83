"""A chat turn whose transaction PostgreSQL rolls back as a deadlock victim is written again, not answered 500.

The deadlock is made on purpose: this test's own transaction takes alice's row, then her conversation's, the
reverse of the order a turn takes them in (the conversation, then its owner). The turn waits for alice's row
while holding the conversation; the test then waits for the conversation; PostgreSQL finds the cycle when the
turn's deadlock_timeout (one second) runs out, before the test's, and rolls the turn's transaction back."""
from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError, connection, connections, transaction
from psycopg.errors import DeadlockDetected
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from tests.invariants import assert_i1
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)


def _lock_waits() -> int:
    with connection.cursor() as cursor:
        # This database's waits only: make test's parallel workers share the cluster.
        cursor.execute("SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) "
                       "WHERE NOT granted AND datname = current_database()")
        return cursor.fetchone()[0]


def _waited_s() -> float:
    """How long the longest lock wait of this database has lasted (pg_locks.waitstart)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(waitstart)), 0) FROM pg_locks "
                       "JOIN pg_stat_activity USING (pid) WHERE NOT granted AND datname = current_database()")
        return float(cursor.fetchone()[0])


@pytest.mark.postgres
def test_a_turn_chosen_as_deadlock_victim_is_written_again(alice):
    client = APIClient()
    client.force_authenticate(alice)
    conversation_id = client.post("/api/v1/chat/", {"message": "hello"}, format="json").json()["conversation"]["id"]
    answered = []

    def turn() -> None:
        turn_client = APIClient()
        turn_client.force_authenticate(alice)
        try:
            answered.append(turn_client.post("/api/v1/chat/", {"message": "again", "conversation_id": conversation_id},
                                             format="json"))
        finally:
            connections.close_all()

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM auth_user WHERE id = %s FOR NO KEY UPDATE", [alice.pk])
        thread = threading.Thread(target=turn)
        thread.start()
        deadline = time.monotonic() + 30
        while not _lock_waits():  # the turn holds the conversation and waits for alice's row
            assert time.monotonic() < deadline, "the turn never waited for alice's row"
            time.sleep(0.02)
        # Ours begins 0.3 s after the turn's (or at once, if seeing it took longer): the turn's deadlock check
        # (deadlock_timeout, 1 s into its wait) then comes after the cycle exists and before ours. A fixed pause
        # after seeing the wait let a loaded machine run the turn's check before the cycle, and ours found it.
        time.sleep(max(0.0, 0.3 - _waited_s()))
        Conversation.objects.filter(pk=conversation_id).update(title="renamed")  # waits: a cycle
    thread.join(60)

    assert [response.status_code for response in answered] == [201], [r.content[:300] for r in answered]
    assert answered[0].json()["execution"]["status"] == "completed"
    assert Message.objects.filter(conversation_id=conversation_id).count() == 4  # each turn's two, once
    assert_i1(Conversation.objects.get(pk=conversation_id))


def test_a_turn_deadlocked_at_every_attempt_is_refused_503_and_leaves_no_row(alice, monkeypatch):
    def deadlocked(**kwargs):
        raise OperationalError("deadlock detected") from DeadlockDetected("deadlock detected")

    monkeypatch.setattr("workflows.services.runs.message_save", deadlocked)
    monkeypatch.setattr("core.db.CONFLICT_BACKOFF_S", 0)
    client = APIClient()
    client.force_authenticate(alice)

    response = client.post("/api/v1/chat/", {"message": "hello"}, format="json")

    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "database_conflict"
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert not WorkflowExecution.objects.exists()
