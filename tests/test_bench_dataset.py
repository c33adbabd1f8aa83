"""bench/b6_dataset.py writes what the engine would have written: a conversation of the data set goes on
through the API like any other."""
import pytest
from rest_framework.test import APIClient

from bench.b6_dataset import TURNS_PER_CONVERSATION, load
from conversations.models import Conversation
from tests.invariants import assert_i1

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_turn_continues_a_conversation_of_the_data_set():
    written = load(messages=4 * TURNS_PER_CONVERSATION, users=2, days=3)
    conversation = Conversation.objects.order_by("created_at").first()
    client = APIClient()
    client.force_authenticate(conversation.owner)

    response = client.post("/api/v1/chat/", {"message": "And one more?", "conversation_id": str(conversation.pk)},
                           format="json")

    assert written["messages"] == 4 * TURNS_PER_CONVERSATION
    assert response.status_code == 201, response.content
    sequences = [message["sequence"] for message in response.json()["messages"]]
    assert sequences == [2 * TURNS_PER_CONVERSATION + 1, 2 * TURNS_PER_CONVERSATION + 2]
    assert_i1(Conversation.objects.get(pk=conversation.pk))  # the data set's rows and the new turn's
