"""The engine through its services: every kind of run, the trace it leaves, limits and failures."""
import sys
import threading
from decimal import Decimal

import pytest

from analytics.selectors import template_figures_stored
from conversations.models import Conversation, Document, Message
from core.errors import InvalidInput, NotFound
from tests.factories import DocumentFactory, WorkflowDefinitionFactory, run_request
from tests.invariants import assert_all, assert_i1, assert_seq_gapless
from workflows.models import (
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ToolCall,
    WorkflowExecution,
)
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import (
    execution_cancel,
    execution_create,
    execution_run,
    execution_stream,
)

pytestmark = pytest.mark.django_db

# The local model says the message back: a reply of two dozen words.
LONG_STORY = "tell me a long story please, one that goes on and on for a good while"
LINEAR = {
    "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
    "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}],
}


def run(**kwargs) -> WorkflowExecution:
    execution = execution_create(run_request(**kwargs))
    return execution_run(execution_id=execution.pk)


def test_a_chat_turn_saves_both_messages_with_every_usage_field(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True)

    assert execution.status == "completed"
    user, reply = Message.objects.filter(conversation=execution.conversation).order_by("sequence")
    assert (user.sequence, user.role, user.content) == (1, "user", "What is 12*7?")
    assert (reply.sequence, reply.role) == (2, "assistant")
    assert "84" in reply.content
    assert reply.execution_id == user.execution_id == execution.pk
    for message in (user, reply):
        assert message.provider_used == "local" and message.model_used == "local-echo-1"
        assert message.total_tokens == message.prompt_tokens + message.completion_tokens
    assert user.total_tokens == 0
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0 and reply.cost > 0
    assert reply.response_time_ms == execution.execution_time_ms
    assert reply.finish_reason == "stop"
    assert reply.usage_estimated is False
    assert_all(execution)


def test_a_tools_run_sums_usage_across_calls_on_nodes_execution_and_message(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True)

    calls = list(LLMCall.objects.filter(execution=execution).order_by("id"))
    assert len(calls) == 2
    nodes = list(NodeExecution.objects.filter(execution=execution).order_by("index"))
    assert [(n.node_id, n.status) for n in nodes] == [
        ("start", "completed"), ("memory", "completed"), ("retrieval", "skipped"), ("model", "completed"),
        ("tools", "completed"), ("model", "completed"), ("end", "completed"),
    ]
    model_nodes = [n for n in nodes if n.node_type == "model"]
    assert [n.total_tokens for n in model_nodes] == [c.total_tokens for c in calls]
    assert execution.total_tokens == sum(c.total_tokens for c in calls)
    assert execution.cost == sum(c.cost for c in calls)
    assert (execution.llm_calls, execution.tool_calls) == (2, 1)
    tool = ToolCall.objects.get(execution=execution)
    assert (tool.tool, tool.arguments, tool.result, tool.ok) == ("calculator", {"expression": "12*7"}, "84", True)
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.total_tokens == execution.total_tokens and reply.cost == execution.cost
    assert len(reply.usage_raw["calls"]) == 2
    assert_all(execution)


def test_cost_is_priced_from_the_local_simulated_price(alice):
    execution = run(owner=alice, message="hello", chat=True)
    call = LLMCall.objects.get(execution=execution)
    # Seeded local price: $0.50 in, $1.50 out per million tokens.
    expected = (Decimal(call.prompt_tokens) * Decimal("0.5") + Decimal(call.completion_tokens) * Decimal("1.5")) / 10**6
    assert call.cost == expected.quantize(Decimal("0.00000001"))
    assert execution.cost == call.cost > 0


def test_the_event_log_of_a_tools_run_is_complete_and_in_order(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True)
    names = assert_seq_gapless(execution)
    assert names[0] == "workflow_started"
    assert names[-2:] == ["message_saved", "workflow_completed"]
    assert names.count("node_started") == names.count("node_completed") == 7
    assert names.count("token_usage") == 2 and names.count("tool_called") == 1
    completed = ExecutionEvent.objects.get(execution=execution, event="workflow_completed").data
    assert completed["total_tokens"] == execution.total_tokens
    assert Decimal(completed["cost"]) == execution.cost


def test_streaming_and_blocking_runs_leave_the_same_trace(alice, transactional_db):
    blocking = run(owner=alice, message="What is 12*7?", chat=True)
    streamed = execution_create(ChatRequest(owner=alice, message="What is 12*7?", mode="stream"))
    envelopes = list(execution_stream(execution_id=streamed.pk))
    streamed.refresh_from_db()

    assert streamed.status == blocking.status == "completed"
    persisted = [e for e in envelopes if e["seq"] is not None]
    assert [e["seq"] for e in persisted] == list(range(1, len(persisted) + 1))
    assert [e["event"] for e in persisted] == assert_seq_gapless(blocking)
    tokens = "".join(e["data"]["text"] for e in envelopes if e["event"] == "token")
    reply = Message.objects.get(execution=streamed, role="assistant")
    assert tokens == reply.content
    assert envelopes[-1] == persisted[-1] and envelopes[-1]["event"] == "workflow_completed"  # the feed's end
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
        assert getattr(streamed, field) == getattr(blocking, field)
    assert_all(streamed)


def test_a_second_turn_sees_the_first_through_memory(alice):
    first = run(owner=alice, message="My name is Ada.", chat=True)
    second = run(owner=alice, message="What is my name?", chat=True, conversation_id=first.conversation_id)
    first_prompt = LLMCall.objects.get(execution=first).prompt_tokens
    second_prompt = LLMCall.objects.get(execution=second).prompt_tokens
    assert second_prompt > first_prompt  # the history went into the prompt
    memory = NodeExecution.objects.get(execution=second, node_id="memory")
    assert memory.output == {"messages": 2}
    assert_i1(first.conversation)
    assert first.conversation.message_count == 4


def test_memory_can_be_switched_off_by_run_config(alice):
    first = run(owner=alice, message="hello", chat=True)
    second = run(owner=alice, message="again", chat=True, conversation_id=first.conversation_id,
                 config={"enable_memory": False})
    assert NodeExecution.objects.get(execution=second, node_id="memory").status == "skipped"


def test_retrieval_puts_the_owners_documents_in_context(alice, bob):
    DocumentFactory(owner=alice, title="Kiwi facts", content="The kiwi is a flightless bird.")
    DocumentFactory(owner=bob, title="Kiwi secrets", content="Bob's kiwi notes.")
    execution = run(owner=alice, message="tell me about the kiwi", chat=True, config={"enable_retrieval": True})
    retrieval = NodeExecution.objects.get(execution=execution, node_id="retrieval")
    assert retrieval.status == "completed"
    found = Document.objects.filter(pk__in=retrieval.output["documents"])
    assert [d.owner for d in found] == [alice]


def test_a_custom_graph_runs_without_a_conversation(alice):
    execution = run(owner=alice, graph=LINEAR, message="hi")
    assert (execution.workflow_type, execution.status, execution.conversation_id) == ("custom", "completed", None)
    assert execution.output_data["content"].startswith("(local model)")
    assert_all(execution)


def test_a_definition_run_records_the_version_it_ran(alice):
    definition = WorkflowDefinitionFactory(owner=alice, name="linear", nodes=LINEAR["nodes"], edges=LINEAR["edges"])
    execution = run(owner=alice, definition_id=definition.pk, message="hi")
    assert (execution.workflow_type, execution.definition_version) == ("definition", 1)
    assert_all(execution)


def test_a_template_run_updates_template_analytics(alice):
    execution = run(owner=alice, template="summarize", message="Long text " * 20)
    analytics = template_figures_stored()[execution.template_id]
    assert (analytics["total_executions"], analytics["successful_executions"]) == (1, 1)
    assert analytics["total_tokens"] == execution.total_tokens and analytics["total_cost"] == execution.cost
    assert analytics["last_success_at"] == execution.completed_at
    assert_all(execution)


def test_it_exceeds_max_total_tokens_and_keeps_the_usage(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True, config={"max_total_tokens": 5})
    assert (execution.status, execution.error_type) == ("failed", "limit_exceeded")
    assert execution.total_tokens > 5 and execution.llm_calls == 1
    reply = Message.objects.get(execution=execution, role="assistant")
    assert reply.total_tokens == execution.total_tokens and "max_total_tokens" in reply.error_message
    limit = ExecutionEvent.objects.get(execution=execution, event="limit_exceeded")
    assert limit.data == {"limit": "max_total_tokens", "value": 5}
    assert_all(execution)


def test_it_exceeds_max_tool_calls_and_keeps_the_usage(alice):
    execution = run(owner=alice, message="What is 1+1 and 2+2?", chat=True, config={"max_tool_calls": 1})
    assert (execution.status, execution.error_type) == ("failed", "limit_exceeded")
    assert execution.llm_calls == 1 and execution.total_tokens > 0
    assert ToolCall.objects.filter(execution=execution).count() == 0
    assert ExecutionEvent.objects.filter(execution=execution, event="limit_exceeded").exists()
    assert_all(execution)


def test_at_the_tool_cap_universal_chat_answers_without_tools(alice):
    execution = run(owner=alice, message="What is 12*7?", chat=True, config={"max_tool_calls": 0})
    assert execution.status == "completed" and execution.tool_calls == 0
    assert ToolCall.objects.count() == 0


def test_a_tool_not_allowed_fails_that_call_and_is_recorded(alice):
    graph = {
        "nodes": [{"id": "start", "type": "start"}, {"id": "m", "type": "model", "config": {"enable_tools": True}},
                  {"id": "t", "type": "tools"}, {"id": "end", "type": "end"}],
        "edges": [{"source": "start", "target": "m"}, {"source": "m", "target": "t", "condition": "has_tool_calls"},
                  {"source": "m", "target": "end"}, {"source": "t", "target": "end"}],
    }
    # Tools are bound (enable_tools on the node) but the run allows none: the call fails, the run goes on.
    execution = run(owner=alice, graph=graph, message="What is 2+3?", config={"enable_tools": False})
    tool = ToolCall.objects.get(execution=execution)
    assert (tool.tool, tool.ok) == ("calculator", False)
    assert "not allowed" in tool.error
    assert execution.status == "completed"


def test_the_timeout_ends_a_run_as_limit_exceeded(alice):
    graph = {"nodes": [{"id": "start", "type": "start"}, {"id": "wait", "type": "delay",
                                                           "config": {"duration_ms": 5000}}, {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "wait"}, {"source": "wait", "target": "end"}]}
    execution = run(owner=alice, graph=graph, config={"timeout_s": 1})
    assert (execution.status, execution.error_type) == ("failed", "limit_exceeded")
    assert "timeout_s" in execution.error_message
    assert NodeExecution.objects.get(execution=execution, node_id="wait").status == "failed"
    assert_all(execution)


def test_cancelling_a_pending_run_means_it_never_runs(alice):
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="background"))
    execution_cancel(execution=execution, actor=alice)
    after = execution_run(execution_id=execution.pk)
    assert after.status == "cancelled"
    assert NodeExecution.objects.filter(execution=execution).count() == 0
    assert assert_seq_gapless(after) == ["message_saved", "workflow_cancelled"]
    reply = Message.objects.get(execution=execution, role="assistant")
    assert (reply.content, reply.total_tokens, reply.error_message) == ("", 0, "cancelled before it started")
    assert_all(after)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_running_run_stops_it_at_the_next_boundary_and_keeps_usage(alice):
    graph = {
        "nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"},
                  {"id": "wait", "type": "delay", "config": {"duration_ms": 10000}}, {"id": "end", "type": "end"}],
        "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "wait"},
                  {"source": "wait", "target": "end"}],
    }
    execution = execution_create(ExecutionRequest(owner=alice, graph=graph, message="hi", mode="stream"))
    seen = []
    stream = execution_stream(execution_id=execution.pk)
    for envelope in stream:
        seen.append(envelope["event"])
        if envelope["event"] == "node_started" and envelope["data"]["node_id"] == "wait":
            execution_cancel(execution=execution, actor=alice)
    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == ("cancelled", "cancelled")
    assert execution.llm_calls == 1 and execution.total_tokens > 0
    # The delay was cut short by the cancel, not slept out (how long the run took tells nothing on a loaded machine)
    nodes = NodeExecution.objects.filter(execution=execution)
    assert list(nodes.order_by("index").values_list("node_id", "status", "error_message")) == [
        ("start", "completed", ""), ("llm", "completed", ""), ("wait", "failed", "the run was cancelled")]
    assert seen[-1] == "workflow_cancelled"
    assert_all(execution)


def test_a_cancelled_chat_turn_keeps_the_partial_reply_and_its_usage(alice, transactional_db, settings):
    # At 100 ms a word, the reply streams for seconds after its first word: the cancel, asked then, finds the run
    # still going when a loaded machine lets it come a second or more late (it stops at its next word either way).
    settings.CHATTER_LOCAL_TOKEN_DELAY_MS = 100
    execution = execution_create(ChatRequest(owner=alice, message=LONG_STORY, mode="stream"))
    cancelled = False
    for envelope in execution_stream(execution_id=execution.pk):
        if envelope["event"] == "token" and not cancelled:  # tokens already sent may follow; one cancel is asked
            execution_cancel(execution=execution, actor=alice)
            cancelled = True
    execution.refresh_from_db()
    reply = Message.objects.get(execution=execution, role="assistant")
    assert execution.status == "cancelled"
    assert reply.content and reply.error_message
    assert reply.usage_estimated is True and reply.total_tokens == execution.total_tokens > 0
    assert_all(execution)


def test_loop_variable_and_conditional_nodes_route_the_run(alice):
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "count", "type": "loop", "config": {"max_iterations": 3}},
            {"id": "inc", "type": "variable", "config": {"operation": "increment", "variable_name": "n"}},
            {"id": "check", "type": "conditional", "config": {"condition": "variable n >= 3"}},
            {"id": "done", "type": "variable", "config": {"operation": "set", "variable_name": "big", "value": True}},
            {"id": "end", "type": "end"},
        ],
        "edges": [
            {"source": "start", "target": "count"},
            {"source": "count", "target": "inc", "condition": "loop count continue"},
            {"source": "count", "target": "end"},
            {"source": "inc", "target": "check"},
            {"source": "check", "target": "done", "branch": "true"},
            {"source": "check", "target": "count", "branch": "false"},
            {"source": "done", "target": "end"},
        ],
    }
    execution = run(owner=alice, graph=graph, variables={"n": 0})
    assert execution.status == "completed"
    assert execution.output_data["variables"] == {"n": 3, "big": True}
    trace = list(NodeExecution.objects.filter(execution=execution).order_by("index").values_list("node_id", flat=True))
    assert trace == ["start", "count", "inc", "check", "count", "inc", "check", "count", "inc", "check", "done", "end"]


def test_an_error_handler_retries_then_continues(alice):
    graph = {
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "bad", "type": "variable", "config": {"operation": "append", "variable_name": "x", "value": 1}},
            {"id": "handler", "type": "error_handler", "config": {"retry_count": 2, "fallback_action": "continue"}},
            {"id": "end", "type": "end"},
        ],
        "edges": [
            {"source": "start", "target": "bad"},
            {"source": "bad", "target": "handler", "condition": "has_errors"},
            {"source": "bad", "target": "end"},
            {"source": "handler", "target": "end"},
        ],
    }
    execution = run(owner=alice, graph=graph, variables={"x": "not a list"})
    assert execution.status == "completed"
    trace = list(NodeExecution.objects.filter(execution=execution).order_by("index").values_list("node_id", "status"))
    assert trace == [("start", "completed"), ("bad", "failed"), ("handler", "completed"), ("bad", "failed"),
                     ("handler", "completed"), ("bad", "failed"), ("handler", "completed"), ("end", "completed")]


def test_a_failing_node_without_a_handler_fails_the_run(alice):
    graph = {
        "nodes": [{"id": "start", "type": "start"},
                  {"id": "bad", "type": "variable", "config": {"operation": "increment", "variable_name": "x"}},
                  {"id": "end", "type": "end"}],
        "edges": [{"source": "start", "target": "bad"}, {"source": "bad", "target": "end"}],
    }
    execution = run(owner=alice, graph=graph, variables={"x": "text"})
    assert (execution.status, execution.error_type) == ("failed", "node_error")
    assert "bad" in execution.error_message
    assert assert_seq_gapless(execution)[-1] == "workflow_failed"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"config": {"provider": "nope"}}, InvalidInput),
        ({"config": {"model": "no-such-model"}}, InvalidInput),
        ({"config": {"temperature": 3}}, InvalidInput),
        ({"config": {"surprise": 1}}, InvalidInput),
        ({"config": {"allowed_tools": ["rm_rf"]}}, InvalidInput),
        ({"graph": {"nodes": [], "edges": []}, "chat": False}, InvalidInput),
        ({"template": "no_such_template"}, NotFound),
        ({"conversation_id": "00000000-0000-0000-0000-000000000000"}, NotFound),
        ({"message": ""}, InvalidInput),
    ],
)
def test_bad_input_is_refused_before_any_row_is_written(alice, kwargs, error):
    request = {"owner": alice, "message": "hi", "chat": True, **kwargs}
    with pytest.raises(error):
        execution_create(run_request(**request))
    assert WorkflowExecution.objects.count() == 0
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0


def test_another_users_conversation_is_not_found(alice, bob):
    first = run(owner=alice, message="hi", chat=True)
    with pytest.raises(NotFound):
        execution_create(ChatRequest(owner=bob, message="hi", conversation_id=first.conversation_id))
    assert Message.objects.count() == 2


def test_the_anthropic_provider_without_its_package_is_a_clear_error(alice, monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # Python's own "not installed": import fails
    with pytest.raises(InvalidInput, match="langchain-anthropic"):
        execution_create(ChatRequest(owner=alice, message="hi", config={"provider": "anthropic"}))
    assert WorkflowExecution.objects.count() == 0


def test_running_a_claimed_run_twice_does_not_run_it_again(alice):
    execution = run(owner=alice, message="hi", chat=True)
    again = execution_run(execution_id=execution.pk)
    assert again.status == "completed"
    assert Message.objects.filter(execution=execution).count() == 2
    assert_all(again)


def test_concurrent_turns_are_serialized_per_conversation(alice, transactional_db):
    first = run(owner=alice, message="hi", chat=True)
    errors = []

    def turn(i):
        from django.db import connections

        try:
            run(owner=alice, message=f"turn {i}: 1+{i}", chat=True, conversation_id=first.conversation_id)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_i1(first.conversation)
    sequences = list(Message.objects.filter(conversation=first.conversation).values_list("sequence", flat=True))
    assert sorted(sequences) == list(range(1, 15))


def test_the_run_configs_memory_window_applies_when_the_node_sets_none(alice):
    first = run(owner=alice, message="one", chat=True)
    run(owner=alice, message="two", chat=True, conversation_id=first.conversation_id)
    third = run(owner=alice, message="three", chat=True, conversation_id=first.conversation_id,
                config={"memory_window": 3})
    assert NodeExecution.objects.get(execution=third, node_id="memory").output == {"messages": 3}
