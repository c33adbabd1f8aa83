"""Limits enforced at run time (docs/usage.md#templates-and-definitions, and the tools' allow-list). Each violation
leaves a `limit_exceeded` event with the limit and its value; a run-ending one fails the run with error_type
`limit_exceeded`, keeps its usage (I5) and ends its log with the terminal event. tests/workflows/test_engine.py has
the basic cases; these add what they leave open."""
import pytest
from django.core.cache import cache

from conversations.models import Conversation, Message
from tests.factories import run_request
from tests.api.conftest import assert_error, row_counts
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, LLMCall, ToolCall, WorkflowExecution
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = pytest.mark.django_db


def run(**kwargs) -> WorkflowExecution:
    execution = execution_create(run_request(**kwargs))
    return execution_run(execution_id=execution.pk)


def assert_limit_ended(execution, limit, value):
    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == ("failed", "limit_exceeded")
    assert limit in execution.error_message
    events = list(execution.events.order_by("seq").values_list("event", "data"))
    assert ("limit_exceeded", {"limit": limit, "value": value}) in events
    assert events[-1][0] == "workflow_failed" and events[-1][1]["error_type"] == "limit_exceeded"
    assert_all(execution)


def test_the_timeout_stops_a_model_in_mid_stream_and_keeps_the_partial_reply(alice, settings):
    ask = {"owner": alice, "message": "hello there, tell me a long story", "chat": True}
    whole = Message.objects.get(execution=run(**ask, config={"enable_tools": False}), role="assistant").content
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 250
    execution = run(**ask, config={"timeout_s": 1, "enable_tools": False})

    assert_limit_ended(execution, "timeout_s", 1)
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.content and whole.startswith(reply.content) and len(reply.content) < len(whole)  # cut short
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and reply.usage_estimated and reply.total_tokens == call.total_tokens > 0
    assert "timeout_s" in reply.error_message


def test_max_total_tokens_crossed_by_a_later_call_keeps_both_calls(alice):
    reference = run(owner=alice, message="What is 12*7?", chat=True)
    first_call = LLMCall.objects.filter(execution=reference).order_by("id").first().total_tokens

    execution = run(owner=alice, message="What is 12*7?", chat=True, config={"max_total_tokens": first_call + 1})

    assert_limit_ended(execution, "max_total_tokens", first_call + 1)
    assert (execution.llm_calls, execution.tool_calls) == (2, 1)
    assert execution.total_tokens == reference.total_tokens  # the call that crossed the limit is counted too


def test_a_tools_nodes_own_max_tool_calls_is_enforced(alice):
    graph = {
        "nodes": [{"id": "start", "type": "start"}, {"id": "m", "type": "model"},
                  {"id": "t", "type": "tools", "config": {"max_tool_calls": 1}}, {"id": "end", "type": "end"}],
        "edges": [{"source": "start", "target": "m"}, {"source": "m", "target": "t", "condition": "has_tool_calls"},
                  {"source": "m", "target": "end"}, {"source": "t", "target": "end"}],
    }
    execution = run(owner=alice, graph=graph, message="What is 1+1 and 2+2?", config={"max_tool_calls": 10})

    assert_limit_ended(execution, "max_tool_calls", 1)
    assert execution.llm_calls == 1 and ToolCall.objects.filter(execution=execution).count() == 0


def test_a_tool_outside_the_allow_list_is_refused_reported_and_the_run_goes_on(alice, openai_server):
    # The model asks for a tool the run never offered it.
    openai_server.reply(tool_calls=[{"name": "current_time", "arguments": {}}],
                      usage={"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55})
    openai_server.reply(content="I cannot tell the time.",
                      usage={"prompt_tokens": 70, "completion_tokens": 6, "total_tokens": 76})
    execution = run(owner=alice, message="What time is it?", chat=True,
                    config={"provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["calculator"]})

    assert execution.status == "completed" and execution.total_tokens == 131
    assert [tool["function"]["name"] for tool in openai_server.requests[0].body["tools"]] == ["calculator"]
    refused = ToolCall.objects.get(execution=execution)
    assert (refused.tool, refused.ok) == ("current_time", False) and "not allowed" in refused.error
    assert ExecutionEvent.objects.get(execution=execution, event="limit_exceeded").data == {
        "limit": "allowed_tools", "value": "current_time"}
    tool_message = openai_server.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool" and "not allowed" in tool_message["content"]
    assert_all(execution)


# --- per-user concurrent runs, over HTTP -----------------------------------------------------------------
@pytest.fixture(autouse=True)
def fresh_throttles():
    cache.clear()  # throttle counters live in the cache, keyed by user id (ids repeat across tests)


def test_a_run_over_the_concurrent_limit_is_a_429_with_the_error_shape_and_no_row(api, bob_api, alice, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = 2
    for _ in range(2):  # background runs wait in the queue: pending counts as running
        execution_create(ExecutionRequest(owner=alice, template="universal_chat", message="queued", mode="background"))
    before = (*row_counts(), LLMCall.objects.count())

    for url, body in (("/api/v1/executions/", {"template": "universal_chat", "input": {"message": "hi"}}),
                      ("/api/v1/chat/", {"message": "hi"}),
                      ("/api/v1/chat/", {"message": "hi", "background": True})):
        response = api.post(url, body, format="json")
        assert "2" in response.json()["error"]["message"]
        assert_error(response, 429, "too_many_runs")
    assert (*row_counts(), LLMCall.objects.count()) == before

    assert bob_api.post("/api/v1/chat/", {"message": "hi"}, format="json").status_code == 201  # alice's runs only


def test_a_finished_run_frees_its_slot(api, alice, settings):
    settings.CHATTER_MAX_CONCURRENT_RUNS = 1
    waiting = execution_create(ChatRequest(owner=alice, message="queued", mode="background"))
    assert api.post("/api/v1/chat/", {"message": "hi"}, format="json").status_code == 429

    execution_run(execution_id=waiting.pk)

    response = api.post("/api/v1/chat/", {"message": "hi"}, format="json")
    assert response.status_code == 201, response.content
    assert Conversation.objects.filter(owner=alice).count() == 2


def test_the_concurrent_limit_is_counted_from_the_index_of_runs_in_progress_not_the_users_history(alice):
    """Every run's start counts its owner's runs in progress: the count, as the database runs it (SQLite: in the
    statement sent with its parameters; PostgreSQL: in the trigger that checks the commit), must be able to read only
    the partial index of pending and running runs, never every run the user ever had."""
    from django.db import connection

    from workflows.statements import RUNS_IN_PROGRESS, RUNS_WITHIN_LIMIT

    for _ in range(3):
        execution_run(execution_id=execution_create(ChatRequest(owner=alice, message="history")).pk)
    sent = []

    def keep(execute, sql, params, many, context):
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep):
        execution_create(ChatRequest(owner=alice, message="counted"))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # a tiny test table: show that the index can serve it at all
            cursor.execute("SELECT pg_get_functiondef(%s::regproc)", [RUNS_WITHIN_LIMIT])
            trigger = " ".join(cursor.fetchone()[0].split())
            assert RUNS_IN_PROGRESS.replace("%s", "NEW.owner_id") in trigger, trigger
            sql, params = (f'SELECT COUNT(*) FROM "workflows_workflowexecution" WHERE {RUNS_IN_PROGRESS}',
                           [alice.pk])
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            sql, params = next((sql, params) for sql, params in sent if "COUNT(*)" in sql)
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "execution_owner_in_progress" in plan, plan
    assert WorkflowExecution.objects.filter(owner=alice, status="pending").count() == 1


@pytest.mark.django_db(transaction=True)
def test_simultaneous_requests_never_exceed_the_concurrent_limit(alice, settings):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from core.errors import TooManyRuns

    settings.CHATTER_MAX_CONCURRENT_RUNS = 3

    def create(index: int) -> str:
        try:
            execution_create(ChatRequest(owner=alice, message=f"turn {index}"))  # stays pending: nobody runs it
            return "created"
        except TooManyRuns:
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(16)))

    assert outcomes.count("created") == 3 and outcomes.count("refused") == 13
    assert WorkflowExecution.objects.filter(owner=alice).count() == 3
    assert Message.objects.count() == 3 and Conversation.objects.count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_users_creations_do_not_wait_for_each_other_until_they_commit(alice, settings):
    """On PostgreSQL the owner's limit is checked inside each creation's commit: a creation whose transaction is
    still open (its user message and run written, its commit not yet made) holds no lock that another creation of
    the same user waits for, and the limit still counts both once they commit."""
    import threading

    from django.db import connection

    from core.errors import TooManyRuns
    from workflows.services.run_requests import AgentRunRequest

    settings.CHATTER_MAX_CONCURRENT_RUNS = 2
    written, go_on, outcomes = threading.Event(), threading.Event(), []

    def held_open(execution) -> None:  # in the first creation's transaction, after its run's INSERT
        written.set()
        assert go_on.wait(30)

    def first() -> None:
        try:
            # (the Agent Server API's request, which can call back in the creating transaction)
            execution_create(AgentRunRequest(owner=alice, message="first", chat=True, on_written=held_open))
            outcomes.append("first created")
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert written.wait(30)
        execution_create(ChatRequest(owner=alice, message="second"))  # not waiting for the first's commit
        assert WorkflowExecution.objects.filter(owner=alice).count() == 1  # the first is not committed yet
    finally:
        go_on.set()
        thread.join(30)
    assert outcomes == ["first created"]
    assert WorkflowExecution.objects.filter(owner=alice, status="pending").count() == 2

    with pytest.raises(TooManyRuns):  # both count now: a third is refused at its commit, and leaves nothing
        execution_create(ChatRequest(owner=alice, message="third"))
    assert WorkflowExecution.objects.filter(owner=alice).count() == 2
    assert Message.objects.filter(conversation__owner=alice).count() == 2
