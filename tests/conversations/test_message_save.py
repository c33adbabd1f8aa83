"""message_save, the one path by which a message is stored: a conversation opened by its first message is
inserted already counting it; a message into an existing conversation takes the next sequence from the locked row
(on PostgreSQL by the same statement); another user's conversation is a 404 that writes nothing. Each case is
checked against what a plain read of the database gives, on SQLite and PostgreSQL."""
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, Message
from conversations.services import conversation_create, message_save
from core.errors import NotFound
from tests.invariants import assert_i1

pytestmark = pytest.mark.django_db


def _of_conversations(queries) -> list[str]:
    """The statements that wrote a conversation or a message (the usage receivers write rollups besides)."""
    return [q["sql"] for q in queries.captured_queries
            if q["sql"].split()[0].upper() in ("INSERT", "UPDATE", "WITH") and '"conversations_' in q["sql"]]


def test_a_conversation_opened_by_its_first_message_is_written_counting_it(alice):
    opening = conversation_create(owner=alice, title="opened", written=False)
    assert not Conversation.objects.filter(pk=opening.pk).exists()

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        message = message_save(opening=opening, owner=alice, role="user", content="hello", prompt_tokens=7,
                               cost=Decimal("0.0125"))
    assert len(_of_conversations(queries)) == (1 if connection.vendor == "postgresql" else 2)

    conversation = Conversation.objects.get(pk=opening.pk)
    assert (conversation.title, conversation.message_count, conversation.last_sequence) == ("opened", 1, 1)
    assert (conversation.prompt_tokens, conversation.total_tokens, conversation.total_cost) == (
        7, 7, Decimal("0.0125"))
    assert abs((conversation.last_message_at - message.created_at).total_seconds()) < 5
    stored = Message.objects.get(pk=message.pk)
    assert (stored.conversation_id, stored.sequence, stored.content, stored.cost) == (
        opening.pk, 1, "hello", Decimal("0.0125"))
    assert message.conversation.message_count == 1 and not message._state.adding
    assert_i1(conversation)


def test_a_message_into_a_conversation_takes_the_next_sequence_with_the_totals(alice):
    conversation = conversation_create(owner=alice, title="going on")
    first = message_save(conversation_id=conversation.pk, owner=alice, role="user", content="one")
    with CaptureQueriesContext(connection) as queries:
        second = message_save(conversation_id=conversation.pk, owner=alice, role="assistant", content="two",
                              prompt_tokens=3, completion_tokens=4, cost=Decimal("0.5"), tool_calls=[{"name": "x"}],
                              usage_raw={"total_tokens": 7})
    assert len(_of_conversations(queries)) == (1 if connection.vendor == "postgresql" else 2)

    assert (first.sequence, second.sequence) == (1, 2)
    assert second.conversation.message_count == 2 and second.conversation.total_tokens == 7
    stored = Message.objects.get(pk=second.pk)
    assert (stored.sequence, stored.role, stored.total_tokens, stored.cost) == (2, "assistant", 7, Decimal("0.5"))
    assert (stored.tool_calls, stored.usage_raw) == ([{"name": "x"}], {"total_tokens": 7})
    assert stored.created_at == second.created_at  # as stored, whichever path wrote it
    assert_i1(Conversation.objects.get(pk=conversation.pk))


def test_another_users_or_a_missing_conversation_is_a_404_and_writes_nothing(alice, bob):
    conversation = conversation_create(owner=alice, title="alice's")
    for conversation_id in (conversation.pk, uuid.uuid4()):
        with pytest.raises(NotFound), transaction.atomic():
            message_save(conversation_id=conversation_id, owner=bob, role="user", content="not mine")
    assert not Message.objects.exists()
    assert Conversation.objects.get(pk=conversation.pk).message_count == 0
