"""I1 under concurrency: parallel turns and deletes on one conversation lose no update.

Runs on SQLite and (in `make test`'s second phase) on PostgreSQL, where writers really run in parallel.
"""
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from conversations.models import Message
from conversations.services import message_delete
from tests.invariants import assert_i1
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_run

TURNS = 50


def _in_thread(function):
    def wrapped(*args):
        try:
            return function(*args)
        finally:
            connections.close_all()

    return wrapped


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_turns_and_deletes_keep_conversation_totals_exact(alice, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = TURNS + 1
    first = execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="hi")).pk)
    conversation = first.conversation

    @_in_thread
    def turn(i):
        execution = execution_create(ChatRequest(owner=alice, message=f"What is {i}*3?",
                                                 conversation_id=conversation.pk))
        return execution_run(execution_id=execution.pk).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(turn, range(TURNS)))
    assert statuses == ["completed"] * TURNS
    assert_i1(conversation)
    assert conversation.message_count == 2 * (TURNS + 1)
    sequences = sorted(Message.objects.filter(conversation=conversation).values_list("sequence", flat=True))
    assert sequences == list(range(1, 2 * (TURNS + 1) + 1))

    # Delete half the messages from parallel threads, each one twice: it must be subtracted exactly once.
    doomed = list(Message.objects.filter(conversation=conversation, sequence__gt=TURNS + 1)
                  .values_list("pk", flat=True))
    with ThreadPoolExecutor(max_workers=8) as pool:
        deleted = list(pool.map(_in_thread(lambda pk: message_delete(message_id=pk)), doomed + doomed))
    assert deleted.count(True) == len(doomed)
    assert_i1(conversation)
    assert conversation.message_count == TURNS + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_concurrency_test_runs_on_postgresql():
    assert connection.vendor == "postgresql"
