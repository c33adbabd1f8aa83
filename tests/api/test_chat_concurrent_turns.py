"""Concurrent chat turns of one user on two conversations, on PostgreSQL (where writers run in parallel): none
deadlocks and none is lost. B7 once found turns killed by PostgreSQL's deadlock detector here: one transaction
held the user's row and waited for a conversation (or the audit chain), another held those and waited for the
user's row; the failed turns left runs `running` and user messages without a reply."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from tests.invariants import assert_i1, assert_seq_gapless
from workflows.models import WorkflowExecution

URL = "/api/v1/chat/"
THREADS = 16
TURNS = 64


def _chat(user, body: dict):
    client = APIClient()
    client.force_authenticate(user)
    try:
        return client.post(URL, body, format="json")
    finally:
        connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_turns_of_one_user_on_two_conversations_all_complete(alice, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = TURNS + 10
    conversations = [_chat(alice, {"message": f"conversation {c}"}).json()["conversation"]["id"] for c in range(2)]

    def turn(i: int):
        return _chat(alice, {"message": f"What is {i}*7?", "conversation_id": conversations[i % 2]})

    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(turn, range(TURNS)))

    assert [r.status_code for r in responses] == [201] * TURNS, [r.content[:300] for r in responses
                                                                 if r.status_code != 201][:3]
    assert set(WorkflowExecution.objects.values_list("status", flat=True)) == {"completed"}
    for execution in WorkflowExecution.objects.all():
        assert_seq_gapless(execution)
    for pk in conversations:
        assert_i1(Conversation.objects.get(pk=pk))
        sequences = list(Message.objects.filter(conversation_id=pk).order_by("sequence")
                         .values_list("sequence", flat=True))
        assert sequences == list(range(1, 2 * (1 + TURNS // 2) + 1))
