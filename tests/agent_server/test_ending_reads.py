"""A run's ending hands its thread's next queued run over (multitask_strategy enqueue): only when one is queued.
An ordinary chat turn's ending reads nothing for it (the conversation's row, returned by the ending's own write,
says runs_queued = 0), so the receiver costs the chat path no statement."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_run_now

pytestmark = pytest.mark.django_db(transaction=True)  # on_commit callbacks run


def agent_run_queries(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "agent_server_agentrun" in q["sql"]]


def test_a_turn_with_nothing_queued_behind_it_reads_no_queue(alice):
    first = execution_run_now(ChatRequest(owner=alice, message="warm up"))

    with CaptureQueriesContext(connection) as queries:
        execution_run_now(ChatRequest(owner=alice, message="hello", conversation_id=first.conversation_id))

    assert agent_run_queries(queries) == []


def test_a_turn_with_a_run_queued_behind_it_looks_for_it(alice):
    first = execution_run_now(ChatRequest(owner=alice, message="warm up"))
    Conversation.objects.filter(pk=first.conversation_id).update(runs_queued=1)

    with CaptureQueriesContext(connection) as queries:
        execution_run_now(ChatRequest(owner=alice, message="hello", conversation_id=first.conversation_id))

    assert agent_run_queries(queries) != []
