"""tests/factories.py makes rows as the product would: personas that can log in, messages and runs through their
services (counters kept), keys that authenticate."""
import pytest
from rest_framework.test import APIClient

from conversations.models import Conversation
from tests.factories import (
    ApiTokenFactory,
    BudgetFactory,
    ConversationFactory,
    MessageFactory,
    UserFactory,
    WorkflowDefinitionFactory,
    WorkflowExecutionFactory,
)

pytestmark = pytest.mark.django_db


def test_a_persona_logs_in_with_its_own_password(alice):
    assert (alice.username, alice.email) == ("alice", "alice@example.com")
    assert APIClient().login(username="alice", password="alice-password")
    assert not APIClient().login(username="alice", password="bob-password")
    assert UserFactory().username != UserFactory().username


def test_messages_are_saved_through_their_service_keeping_the_conversations_counters(alice):
    conversation = ConversationFactory(owner=alice)
    first = MessageFactory(conversation=conversation, content="hello")
    second = MessageFactory(conversation=conversation, role="assistant", content="hi")

    conversation = Conversation.objects.get(pk=conversation.pk)
    assert (first.sequence, second.sequence) == (1, 2)
    assert conversation.message_count == 2 and conversation.last_message_at is not None


def test_a_key_made_by_the_factory_authenticates_its_user(alice, bob):
    token = ApiTokenFactory(user=alice, scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")

    assert client.get("/api/v1/conversations/").status_code == 200
    assert token.scopes == ["read"] and token.key not in (token.digest, token.prefix)
    other = token.key[:-1] + ("y" if token.key.endswith("x") else "x")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other}")
    assert client.get("/api/v1/conversations/").status_code == 401


def test_runs_definitions_and_budgets_belong_to_their_owner(alice):
    run = WorkflowExecutionFactory(owner=alice)
    definition = WorkflowDefinitionFactory(owner=alice)
    budget = BudgetFactory(owner=alice)

    assert (run.owner, run.status, run.workflow_type) == (alice, "pending", "chat")
    assert run.conversation.owner == alice
    assert definition.owner == alice and [node["id"] for node in definition.nodes] == ["start", "llm", "end"]
    assert (budget.scope, budget.target_id, budget.limit_usd, budget.limit_tokens) == ("user", str(alice.pk), 1, None)
