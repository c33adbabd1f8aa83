"""factory-boy factories: the world a test starts from, e.g. `ConversationFactory(owner=alice)`.

Rows with counters or invariants of their own are made through the service that keeps them (a conversation, a
message, a definition, a run, an API key); plain rows (templates, prices, budgets, documents) through the model.
Users are the shared personas: `UserFactory(username="alice")` has the email alice@example.com and the
password "alice-password" (tests/conftest.py's `alice` and `bob` fixtures are made so).
"""
from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from analytics.models import ModelPrice
from budgets.models import Budget
from conversations.models import Conversation, Document, Message
from workflows.models import WorkflowDefinition, WorkflowExecution, WorkflowTemplate

# The smallest graph that answers: start → model → end.
LINEAR_GRAPH = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.LazyAttribute(lambda user: f"{user.username}-password")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return model_class.objects.create_user(*args, **kwargs)  # the password hashed


class StaffFactory(UserFactory):
    """A superuser (staff), e.g. `StaffFactory(username="root")`."""

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return model_class.objects.create_superuser(*args, **kwargs)


class GroupFactory(factory.django.DjangoModelFactory):
    """A group of users, e.g. `GroupFactory(name="team", members=[alice])`."""

    class Meta:
        model = Group
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"group{n}")

    @factory.post_generation
    def members(group, create, users, **kwargs):
        if create and users:
            group.user_set.add(*users)


class ConversationFactory(factory.django.DjangoModelFactory):
    """Through conversations.services.conversation_create."""

    class Meta:
        model = Conversation

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Conversation {n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from conversations.services import conversation_create

        return conversation_create(**kwargs)


class MessageFactory(factory.django.DjangoModelFactory):
    """Through conversations.services.message_save: the next in its conversation, its counters kept."""

    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.USER
    content = factory.Sequence(lambda n: f"Message {n}")

    @classmethod
    def _create(cls, model_class, *args, conversation, **kwargs):
        from conversations.services import message_save

        return message_save(conversation_id=conversation.pk, owner=conversation.owner, **kwargs)


class DocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Document

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Document {n}")
    content = "Notes."


class WorkflowTemplateFactory(factory.django.DjangoModelFactory):
    """A user's template (the built-ins come with the migrations)."""

    class Meta:
        model = WorkflowTemplate

    owner = factory.SubFactory(UserFactory)
    key = factory.Sequence(lambda n: f"template-{n}")
    name = factory.LazyAttribute(lambda template: template.key.replace("-", " ").capitalize())
    graph = factory.LazyFunction(lambda: {**LINEAR_GRAPH})


class WorkflowDefinitionFactory(factory.django.DjangoModelFactory):
    """Through workflows.services.definitions.definition_create: its graph checked and normalized."""

    class Meta:
        model = WorkflowDefinition

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Definition {n}")
    nodes = factory.LazyFunction(lambda: list(LINEAR_GRAPH["nodes"]))
    edges = factory.LazyFunction(lambda: list(LINEAR_GRAPH["edges"]))

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from workflows.services.definitions import definition_create

        return definition_create(**kwargs)


class WorkflowExecutionFactory(factory.django.DjangoModelFactory):
    """A pending run, through workflows.services.runs.execution_create: by default a chat turn saying hello (a
    ChatRequest); with `chat=False`, an ExecutionRequest. Every other keyword is the request's (`message`,
    `template`, `graph`, `config`, `mode`, …)."""

    class Meta:
        model = WorkflowExecution

    owner = factory.SubFactory(UserFactory)
    chat = True
    message = "hello"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from workflows.services.runs import execution_create

        return execution_create(run_request(**kwargs))


def run_request(*, chat: bool = False, **fields):
    """A run request as the tests write one: a ChatRequest for a chat turn, else an ExecutionRequest."""
    from workflows.services.run_requests import ChatRequest, ExecutionRequest

    return ChatRequest(**fields) if chat else ExecutionRequest(**fields)


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """Through keys.services.api_token_create; the key itself is the token's `.key` (it is stored only
    as a digest, so this is the one time a test can read it)."""

    class Meta:
        model = "keys.ApiToken"

    user = factory.SubFactory(UserFactory)
    name = ""
    scopes = None  # every scope
    expires_at = None

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from keys.services import api_token_create

        token, key = api_token_create(**kwargs)
        token.key = key
        return token


class BudgetFactory(factory.django.DjangoModelFactory):
    """By default a hard daily limit of $1 on its owner's own spending; a budget given `limit_tokens` has no dollar
    limit unless it is given one too."""

    class Meta:
        model = Budget

    owner = factory.SubFactory(UserFactory)
    scope = Budget.Scope.USER
    target_id = factory.LazyAttribute(lambda budget: str(budget.owner.pk) if budget.scope == Budget.Scope.USER else "")
    period = Budget.Period.DAY
    limit_tokens = None
    limit_usd = factory.LazyAttribute(lambda budget: Decimal("1") if budget.limit_tokens is None else None)


class ModelPriceFactory(factory.django.DjangoModelFactory):
    """A price in effect from now: by default for the local echo models."""

    class Meta:
        model = ModelPrice

    provider = "local"
    model_pattern = r"local-.*"
    input_per_million = Decimal("10")
    output_per_million = Decimal("20")
    effective_from = factory.LazyFunction(timezone.now)
