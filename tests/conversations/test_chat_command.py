from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from conversations.models import Conversation, Message
from tests.invariants import assert_all
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)


def chat(*args):
    out = StringIO()
    call_command("chat", *args, stdout=out)
    return out.getvalue()


def test_it_streams_an_answer_that_used_the_calculator_and_ends_with_tokens_and_cost(alice):
    output = chat("What is 12*7?", "--user", "alice")

    execution = WorkflowExecution.objects.get()
    reply = Message.objects.get(execution=execution, role="assistant")
    assert "⚙ calculator ok" in output
    assert reply.content in output and "84" in reply.content
    summary = next(line for line in output.splitlines() if line.startswith("tokens:"))
    assert (f"prompt {execution.prompt_tokens}, completion {execution.completion_tokens}, "
            f"total {execution.total_tokens}") in summary
    assert f"cost ${execution.cost}" in summary and execution.cost > Decimal("0")
    assert_all(execution)


def test_it_continues_a_conversation(alice):
    chat("hello", "--user", "alice")
    conversation = Conversation.objects.get()
    chat("again", "--user", "alice", "--conversation", str(conversation.pk))
    conversation.refresh_from_db()
    assert conversation.message_count == 4


def test_it_refuses_an_unknown_provider_without_writing_anything(alice):
    with pytest.raises(CommandError, match="provider must be one of"):
        chat("hi", "--user", "alice", "--provider", "nope")
    assert WorkflowExecution.objects.count() == 0 and Conversation.objects.count() == 0


def test_it_refuses_an_unknown_user(alice):
    with pytest.raises(CommandError, match="no user named"):
        chat("hi", "--user", "mallory")
