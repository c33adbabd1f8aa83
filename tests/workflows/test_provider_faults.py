"""The `openai` provider failing in every way a real server fails (tests/openai_stub.py fault modes).

For each fault the run ends in the right terminal state with a specific error type, keeps every token the
provider reported (I5: on the execution, its nodes and, for a chat turn, an assistant message carrying the
partial reply and the error), ends its event log with the terminal event (I6), and leaves I1–I3 exact.

Prices are the seeded gpt-4o-mini row: $0.15 input, $0.60 output per million tokens.
"""
import json
import math
import threading
import time
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from conversations.models import Message
from engine.usage import estimate_tokens
from tests.invariants import assert_all
from workflows.models import ExecutionEvent, LLMCall, NodeExecution, WorkflowExecution
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_cancel, execution_create, execution_run, execution_stream

pytestmark = pytest.mark.django_db

OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}
REPLY = "one two three four five"
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
TOOL_USAGE = {"prompt_tokens": 60, "completion_tokens": 10, "total_tokens": 70}
# A streamed reply is written as: the role chunk, one chunk per word, the finish chunk, the usage chunk.
AFTER_TWO_WORDS = 3
FAST_RETRY = {"retry-after-ms": "10"}


@pytest.fixture
def stub(openai_server):
    return openai_server


def chat(owner, message="Tell me something", **config):
    execution = execution_create(ChatRequest(owner=owner, message=message, config={**OPENAI, **config}))
    return execution_run(execution_id=execution.pk)


def price(prompt_tokens, completion_tokens) -> Decimal:
    return ((prompt_tokens * Decimal("0.15") + completion_tokens * Decimal("0.60")) / 10**6).quantize(
        Decimal("0.00000001"))


def assert_ended(execution, status, error_type=""):
    """The run's state, its terminal event (last), and I1–I3 + I6 exactly."""
    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == (status, error_type), execution.error_message
    last = ExecutionEvent.objects.filter(execution=execution).order_by("-seq").first()
    assert last.event == f"workflow_{status}"
    if error_type:
        assert last.data["error_type"] == error_type
    assert last.data["total_tokens"] == execution.total_tokens and Decimal(last.data["cost"]) == execution.cost
    assert_all(execution)
    return Message.objects.get(execution=execution, role="assistant")


# --- one model call ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "error_type", "words"), [
    (500, "provider_error", "upstream exploded"),
    (429, "provider_rate_limited", "slow down"),
])
def test_an_error_status_fails_the_turn_with_its_error_type_and_no_usage(alice, stub, status, error_type, words):
    stub.reply(status=status, error_body={"error": {"message": words, "type": "server_error"}})
    execution = chat(alice)

    reply = assert_ended(execution, "failed", error_type)
    assert words in execution.error_message
    assert (execution.total_tokens, execution.llm_calls) == (0, 0)
    assert (reply.content, reply.total_tokens) == ("", 0)
    assert words in reply.error_message
    failed = NodeExecution.objects.get(execution=execution, status="failed")
    assert failed.node_type == "model" and words in failed.error_message


def test_a_server_that_never_answers_within_the_runs_timeout_is_the_timeout_limit(alice, stub):
    stub.reply(content=REPLY, usage=USAGE, delay_s=2)
    execution = chat(alice, timeout_s=1)

    reply = assert_ended(execution, "failed", "limit_exceeded")
    assert "timeout_s" in execution.error_message
    limit = ExecutionEvent.objects.get(execution=execution, event="limit_exceeded")
    assert limit.data == {"limit": "timeout_s", "value": 1}
    assert (execution.total_tokens, reply.content) == (0, "")


def test_a_server_that_stalls_past_the_provider_timeout_keeps_the_partial_reply(alice, stub, settings):
    settings.CHATTER_PROVIDER_TIMEOUT_S = 1
    stub.reply(content=REPLY, usage=USAGE, fault="stall", fault_after=AFTER_TWO_WORDS, stall_s=2)
    execution = chat(alice, timeout_s=60)

    reply = assert_ended(execution, "failed", "provider_timeout")
    assert not ExecutionEvent.objects.filter(execution=execution, event="limit_exceeded").exists()
    # Two words were streamed before the stall: the provider bills them, so they are estimated and flagged.
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and call.completion_tokens == estimate_tokens("one two ")
    assert (reply.content, reply.usage_estimated, reply.total_tokens) == ("one two ", True, call.total_tokens)
    assert reply.error_message == execution.error_message


@pytest.mark.parametrize("fault", ["reset", "malformed"])
def test_a_stream_broken_after_some_words_keeps_them_estimated(alice, stub, fault):
    stub.reply(content=REPLY, usage=USAGE, fault=fault, fault_after=AFTER_TWO_WORDS)
    execution = chat(alice)

    reply = assert_ended(execution, "failed", "provider_error")
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and call.prompt_tokens > 0
    assert call.completion_tokens == estimate_tokens("one two ")
    assert call.cost == price(call.prompt_tokens, call.completion_tokens)
    assert (reply.content, reply.usage_estimated) == ("one two ", True)
    assert reply.error_message and reply.finish_reason == "failed"
    assert NodeExecution.objects.get(execution=execution, node_type="model").total_tokens == call.total_tokens


CALCULATOR_ARGUMENTS = '{"expression": "12*7"}'
# The role chunk, the call's header (id and name), then its arguments in 6-character fragments.
TOOL_CALL_BREAKS = {"after_the_header": 2, "mid_arguments": 4}


@pytest.mark.parametrize("fault", ["reset", "close"])
@pytest.mark.parametrize("where", TOOL_CALL_BREAKS)
def test_a_stream_broken_after_only_tool_call_fragments_keeps_an_estimate(alice, stub, fault, where):
    """The server read the prompt and began a tool call, then broke: no usage was reported, so the call is estimated
    from its prompt and the fragments streamed (name and partial arguments), flagged, on every total."""
    stub.reply(tool_calls=[{"name": "calculator", "arguments": CALCULATOR_ARGUMENTS}], usage=TOOL_USAGE,
               argument_chunk_chars=6, fault=fault, fault_after=TOOL_CALL_BREAKS[where])
    execution = chat(alice, message="What is 12*7?")

    reply = assert_ended(execution, "failed", "provider_error")
    call = LLMCall.objects.get(execution=execution)
    streamed = "calculator" + CALCULATOR_ARGUMENTS[:6 * (TOOL_CALL_BREAKS[where] - 2)]
    assert call.estimated and call.prompt_tokens > 0
    assert call.completion_tokens == estimate_tokens(streamed) > 0
    assert call.cost == price(call.prompt_tokens, call.completion_tokens) > 0
    assert (execution.llm_calls, execution.total_tokens, execution.cost) == (1, call.total_tokens, call.cost)
    assert (reply.total_tokens, reply.cost, reply.usage_estimated) == (call.total_tokens, call.cost, True)
    assert (reply.content, reply.finish_reason) == ("", "failed") and reply.error_message
    assert reply.conversation.total_tokens == call.total_tokens  # a new conversation: its user message has none
    node = NodeExecution.objects.get(execution=execution, node_type="model")
    assert (node.status, node.total_tokens, node.cost) == ("failed", call.total_tokens, call.cost)


def test_a_server_that_answers_nothing_before_breaking_is_billed_nothing(alice, stub):
    stub.reply(content=REPLY, usage=USAGE, fault="reset", fault_after=0)  # the headers, then a reset
    execution = chat(alice)

    reply = assert_ended(execution, "failed", "provider_error")
    assert (execution.llm_calls, execution.total_tokens, reply.total_tokens) == (0, 0, 0)
    assert not LLMCall.objects.filter(execution=execution).exists()


def test_a_reset_after_the_usage_report_keeps_the_reported_usage_exactly(alice, stub):
    stub.reply(content=REPLY, usage=USAGE, fault="reset")  # every chunk, usage included, then a reset
    execution = chat(alice)

    reply = assert_ended(execution, "failed", "provider_error")
    call = LLMCall.objects.get(execution=execution)
    assert (call.prompt_tokens, call.completion_tokens, call.estimated) == (100, 20, False)
    assert call.usage_raw == USAGE
    assert (reply.content, reply.total_tokens, reply.cost) == (REPLY, 120, price(100, 20))


def test_a_reset_after_cumulative_usage_reports_keeps_the_last_report(alice, stub):
    stub.reply(content=REPLY, usage=USAGE, usage_every_chunk=True, fault="reset", fault_after=4)
    execution = chat(alice)

    assert_ended(execution, "failed", "provider_error")
    call = LLMCall.objects.get(execution=execution)
    # The fourth of seven chunks reported the whole prompt and 4/7 of the completion so far, not estimated.
    assert (call.prompt_tokens, call.completion_tokens, call.estimated) == (100, 20 * 4 // 7, False)


def test_missing_usage_is_estimated_flagged_and_the_turn_completes(alice, stub):
    stub.reply(content=REPLY, usage=None)
    execution = chat(alice)

    reply = assert_ended(execution, "completed")
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and call.completion_tokens == math.ceil(len(REPLY) / 4)
    assert (reply.content, reply.usage_estimated, reply.total_tokens) == (REPLY, True, call.total_tokens)
    assert ExecutionEvent.objects.get(execution=execution, event="token_usage").data["estimated"] is True


def test_a_call_whose_end_finds_the_database_out_of_reach_is_still_booked_exactly(alice, stub):
    """A queued run (a worker's) prices its call before the call waits, so the call's end reads nothing: here the
    database refuses the price's read from the moment the model is asked (as when it is down for longer than the
    pool's timeout), and the call made is booked all the same."""
    from django.db import OperationalError, connection

    from core.cache import hot_reads

    stub.reply(content=REPLY, usage=USAGE)
    execution = execution_create(ChatRequest(owner=alice, message="Tell me something", config=OPENAI))
    hot_reads.forget()  # the worker has not read this model's price yet (its first run of it)

    def unreachable_once_asked(execute, sql, params, many, context):
        if stub.requests and "analytics_modelprice" in sql:
            raise OperationalError("couldn't get a connection after 30.00 sec")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(unreachable_once_asked):
        execution = execution_run(execution_id=execution.pk)

    reply = assert_ended(execution, "completed")
    call = LLMCall.objects.get(execution=execution)
    assert (call.prompt_tokens, call.completion_tokens, call.estimated, call.unpriced) == (100, 20, False, False)
    assert (reply.content, reply.total_tokens, reply.cost) == (REPLY, 120, price(100, 20))
    assert len(stub.requests) == execution.llm_calls == 1


@pytest.mark.django_db(transaction=True)  # the row as another process (and the poll made aside) reads it
def test_a_cancel_check_that_cannot_read_the_database_holds_up_the_reply_once_and_a_later_cancel_stops_it(alice,
                                                                                                          stub):
    """While the database is out of reach, the run's cancel poll fails (each waiting for a connection as long as the
    pool's timeout): the run's own thread makes the first, and the next ones are made aside, each once the last
    failed, so that the reply's tokens wait for none of them; once the database answers, a cancel asked from another
    process (the row's flag) stops the run."""
    from django.db import OperationalError, connection
    from django.db.backends.signals import connection_created

    stub.reply(content=" ".join(f"word{i}" for i in range(400)), usage=USAGE, chunk_delay_s=0.02)
    execution = execution_create(ChatRequest(owner=alice, message="Tell me something", config=OPENAI))
    failed: list[str] = []  # the threads whose cancel poll failed
    back = threading.Event()

    def unreachable(execute, sql, params, many, context):
        if stub.requests and not back.is_set() and sql.startswith(
                'SELECT "workflows_workflowexecution"."status" AS "status", "workflows_workflowexecution"."cancel_requested"'):
            failed.append(threading.current_thread().name)
            if len(failed) == 3:  # the outage ends, and a cancel is asked from elsewhere
                back.set()
                WorkflowExecution.objects.filter(pk=execution.pk).update(cancel_requested=True)
            raise OperationalError("couldn't get a connection after 30.00 sec")
        return execute(sql, params, many, context)

    def unreachable_aside(sender, connection, **kwargs):  # the connections of the threads polling aside
        connection.execute_wrappers.append(unreachable)

    connection_created.connect(unreachable_aside)
    try:
        with connection.execute_wrapper(unreachable):
            execution = execution_run(execution_id=execution.pk)
    finally:
        back.set()
        connection_created.disconnect(unreachable_aside)

    assert_ended(execution, "cancelled", "cancelled")
    assert failed.count(threading.current_thread().name) == 1, failed  # the run's own thread: the first poll only
    assert LLMCall.objects.get(execution=execution).completion_tokens > 0


NO_COUNT = {
    "empty": {},
    "completion_null": {"prompt_tokens": 10, "completion_tokens": None, "total_tokens": 10},
    "completion_text": {"prompt_tokens": 10, "completion_tokens": "x", "total_tokens": 10},
    "past_64_bits": {"prompt_tokens": 2**63, "completion_tokens": 5, "total_tokens": 2**63 + 5},
}


@pytest.mark.parametrize("mode", ["sync", "stream", "whole"])
@pytest.mark.parametrize("usage", NO_COUNT.values(), ids=NO_COUNT)
def test_a_usage_that_is_no_count_is_estimated_flagged_and_the_turn_completes(alice, stub, transactional_db, usage,
                                                                               mode):
    """LangChain reads an empty or partial usage as zeros, and fails the call on a text: the reply, arrived whole,
    was booked at 0 tokens and $0 not flagged, or failed. Streamed, or answered whole (the gateway's reply_whole)."""
    stub.reply(content=REPLY, usage=usage)
    config = {**OPENAI, **({"reply_whole": True} if mode == "whole" else {})}
    execution = execution_create(ChatRequest(owner=alice, message="Tell me something", mode=mode.replace(
        "whole", "sync"), config=config))
    if mode == "stream":
        list(execution_stream(execution_id=execution.pk))
    else:
        execution_run(execution_id=execution.pk)

    reply = assert_ended(execution, "completed")
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and call.prompt_tokens > 0 and call.completion_tokens == estimate_tokens(REPLY)
    assert call.cost == price(call.prompt_tokens, call.completion_tokens) > 0
    assert (reply.content, reply.usage_estimated, reply.total_tokens, reply.cost) == (
        REPLY, True, call.total_tokens, call.cost)
    assert (execution.total_tokens, execution.cost) == (call.total_tokens, call.cost)


def test_usage_repeated_cumulatively_in_every_chunk_counts_once(alice, stub):
    stub.reply(content=REPLY, usage=USAGE, usage_every_chunk=True)
    execution = chat(alice)

    reply = assert_ended(execution, "completed")
    assert (execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) == (100, 20, 120)
    assert execution.cost == price(100, 20) and execution.llm_calls == 1
    assert (reply.total_tokens, reply.usage_estimated, reply.usage_raw) == (120, False, USAGE)


# --- a multi-call run: the first call asks for a tool, the second fails --------------------------------
def script_tool_call(stub):
    stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}}], usage=TOOL_USAGE)


SECOND_CALL_FAULTS = {
    # name: (reply kwargs, status, error_type, second call's (prompt, completion) or "estimated" or None)
    "http_500": ({"status": 500}, "failed", "provider_error", None),
    "http_429": ({"status": 429}, "failed", "provider_rate_limited", None),
    "reset_mid_stream": ({"fault": "reset", "fault_after": AFTER_TWO_WORDS}, "failed", "provider_error",
                         "estimated"),
    "reset_after_usage": ({"fault": "reset"}, "failed", "provider_error", (100, 20)),
    "malformed_json": ({"fault": "malformed", "fault_after": AFTER_TWO_WORDS}, "failed", "provider_error",
                       "estimated"),
    "usage_missing": ({"usage": None}, "completed", "", "estimated"),
    "usage_cumulative": ({"usage_every_chunk": True}, "completed", "", (100, 20)),
}


@pytest.mark.parametrize("fault", SECOND_CALL_FAULTS)
def test_a_tools_run_whose_second_call_fails_keeps_the_first_calls_usage(alice, stub, fault):
    kwargs, status, error_type, second = SECOND_CALL_FAULTS[fault]
    script_tool_call(stub)
    stub.reply(**{"content": REPLY, "usage": USAGE, **kwargs})
    execution = chat(alice, message="What is 12*7?")

    reply = assert_ended(execution, status, error_type)
    assert execution.tool_calls == 1
    calls = list(LLMCall.objects.filter(execution=execution).order_by("id"))
    assert (calls[0].prompt_tokens, calls[0].completion_tokens, calls[0].estimated) == (60, 10, False)
    if second is None:
        assert len(calls) == 1 and execution.total_tokens == 70
    elif second == "estimated":
        assert len(calls) == 2 and calls[1].estimated
        assert execution.total_tokens == 70 + calls[1].total_tokens and reply.usage_estimated
    else:
        assert len(calls) == 2 and (calls[1].prompt_tokens, calls[1].completion_tokens) == second
        assert not calls[1].estimated and execution.total_tokens == 70 + sum(second)
    model_nodes = NodeExecution.objects.filter(execution=execution, node_type="model").order_by("index")
    assert [n.total_tokens for n in model_nodes] == [c.total_tokens for c in calls] + (
        [0] if second is None else [])
    if status == "failed":
        assert reply.error_message == execution.error_message
        assert model_nodes.last().status == "failed"


# --- retries, where the provider client retries -----------------------------------------------------
@pytest.mark.parametrize("status", [500, 429])
def test_a_retried_error_then_success_counts_only_the_successful_call(alice, stub, settings, status):
    settings.CHATTER_PROVIDER_MAX_RETRIES = 1
    stub.reply(status=status, headers=FAST_RETRY)
    stub.reply(content=REPLY, usage=USAGE)
    execution = chat(alice)

    reply = assert_ended(execution, "completed")
    assert len(stub.requests) == 2
    assert (execution.total_tokens, execution.llm_calls, execution.cost) == (120, 1, price(100, 20))
    assert (reply.content, reply.usage_estimated) == (REPLY, False)


def test_retries_that_all_fail_count_nothing(alice, stub, settings):
    settings.CHATTER_PROVIDER_MAX_RETRIES = 1
    stub.reply(status=500, headers=FAST_RETRY).reply(status=500, headers=FAST_RETRY)
    execution = chat(alice)

    reply = assert_ended(execution, "failed", "provider_error")
    assert len(stub.requests) == 2
    assert (execution.total_tokens, execution.llm_calls, reply.total_tokens) == (0, 0, 0)


def test_the_client_libraries_retries_end_at_the_runs_timeout(alice, stub, settings):
    """Each retry of the client library got the whole of what was left of the run again: a server that stopped
    answering held a run three times its timeout_s and was asked three times."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 2
    stub.reply(content=REPLY, usage=USAGE)
    assert_ended(chat(alice), "completed")  # (the client library loaded: the next run's time is all the call's)
    stub.always(content=REPLY, usage=USAGE, delay_s=5)
    execution = chat(alice, timeout_s=2)

    reply = assert_ended(execution, "failed", "limit_exceeded")
    assert ExecutionEvent.objects.get(execution=execution, event="limit_exceeded").data == {"limit": "timeout_s",
                                                                                             "value": 2}
    assert len(stub.requests) == 2  # one each: no retry is sent past the run's deadline
    assert (execution.total_tokens, execution.llm_calls, reply.content) == (0, 0, "")


def test_a_retry_after_past_the_runs_timeout_is_not_waited_for(alice, stub, settings):
    settings.CHATTER_PROVIDER_MAX_RETRIES = 2
    stub.always(status=429, headers={"retry-after": "30"})
    execution = chat(alice, timeout_s=10)

    assert_ended(execution, "failed", "provider_rate_limited")
    assert len(stub.requests) == 1


ANTHROPIC = {"provider": "anthropic", "model": "claude-3-5-haiku-latest"}
ANTHROPIC_USAGE = {"input_tokens": 100, "output_tokens": 20}


@pytest.fixture
def anthropic_stub(stub, settings, monkeypatch):
    """The stub as the `anthropic` provider's own server (its client reads ANTHROPIC_BASE_URL), with a fake key."""
    pytest.importorskip("langchain_anthropic")
    settings.ANTHROPIC_API_KEY = "sk-ant-test-not-a-real-key"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.root_url)
    return stub


def test_anthropics_retries_end_at_the_runs_timeout(alice, anthropic_stub, settings):
    """Anthropic's client library gave each retry the whole of what was left of the run again (LangChain's
    ChatAnthropic makes its own HTTP client, which nothing held to the run): a server that stopped answering held a
    run three times its timeout_s and was asked three times."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 2
    anthropic_stub.reply(content=REPLY, usage=ANTHROPIC_USAGE)
    assert_ended(chat(alice, **ANTHROPIC), "completed")  # (the client library loaded: the next run's time is the call's)
    anthropic_stub.always(content=REPLY, usage=ANTHROPIC_USAGE, delay_s=5)
    execution = chat(alice, timeout_s=2, **ANTHROPIC)

    reply = assert_ended(execution, "failed", "limit_exceeded")
    assert ExecutionEvent.objects.get(execution=execution, event="limit_exceeded").data == {"limit": "timeout_s",
                                                                                             "value": 2}
    assert len(anthropic_stub.requests) == 2  # one each: no retry is sent past the run's deadline
    assert (execution.total_tokens, execution.llm_calls, reply.content) == (0, 0, "")


def test_anthropics_failures_before_any_reply_are_still_retried(alice, anthropic_stub, settings):
    settings.CHATTER_PROVIDER_MAX_RETRIES = 2
    anthropic_stub.reply(status=529, headers={"retry-after-ms": "10"}).reply(status=500, headers=FAST_RETRY)
    anthropic_stub.reply(content=REPLY, usage=ANTHROPIC_USAGE)
    execution = chat(alice, **ANTHROPIC)

    reply = assert_ended(execution, "completed")
    assert len(anthropic_stub.requests) == 3 and (reply.content, execution.total_tokens) == (REPLY, 120)


def test_a_cancel_ends_an_anthropic_calls_back_off_before_its_retry(alice, anthropic_stub, settings, transactional_db):
    """The engine's own retry of an anthropic call waits the upstream's Retry-After, which may be a minute: a cancel
    asked meanwhile ends the run then, not once the wait is over."""
    settings.CHATTER_PROVIDER_MAX_RETRIES = 2
    anthropic_stub.always(status=429, headers={"retry-after": "20"})
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="stream",
                                             config={**OPENAI, **ANTHROPIC, "timeout_s": 60}))
    for envelope in execution_stream(execution_id=execution.pk):
        if envelope["event"] == "node_started" and envelope["data"]["node_id"] == "model":
            for _ in range(200):  # until its first try was answered 429 (at most 10 s)
                if anthropic_stub.requests:
                    break
                time.sleep(0.05)
            execution_cancel(execution=execution, actor=alice)

    assert_ended(execution, "cancelled", "cancelled")
    assert len(anthropic_stub.requests) == 1  # no retry after the cancel
    assert (execution.completed_at - execution.started_at).total_seconds() < 20  # the Retry-After not waited out


# --- the same through a streamed run --------------------------------------------------------------------
def test_a_streamed_turn_whose_stream_breaks_ends_with_its_terminal_event(alice, stub, transactional_db):
    stub.reply(content=REPLY, usage=USAGE, fault="reset", fault_after=AFTER_TWO_WORDS)
    execution = execution_create(ChatRequest(owner=alice, message="hi", mode="stream", config=OPENAI))
    envelopes = list(execution_stream(execution_id=execution.pk))

    assert "".join(e["data"]["text"] for e in envelopes if e["event"] == "token") == "one two "
    persisted = [e for e in envelopes if e["seq"] is not None]
    assert persisted[-1]["event"] == "workflow_failed"
    assert persisted[-1]["data"]["error_type"] == "provider_error"
    reply = assert_ended(execution, "failed", "provider_error")
    assert reply.content == "one two " and reply.total_tokens == execution.total_tokens > 0


def test_a_providers_error_quoting_a_key_keeps_no_part_of_it_in_any_form(alice, stub, settings):
    """Every configured secret, in every form, is scrubbed from what a failed call left: one that holds another
    (here SECRET_KEY is part of the API key) is replaced whole, not around the shorter one; one URL-encoded (a
    URL quoting it) too."""
    settings.OPENAI_API_KEY = "sk-live/0123456789abcdef+tail=="
    settings.SECRET_KEY = "0123456789abcdef"
    stub.reply(status=401, error_body={"error": {
        "message": "Incorrect API key provided: sk-live/0123456789abcdef+tail== "
                   "(sent to /v1/chat?key=sk-live%2F0123456789abcdef%2Btail%3D%3D)", "type": "invalid_request_error"}})

    execution = chat(alice)

    client = APIClient()
    client.force_authenticate(alice)
    run = client.get(f"/api/v1/executions/{execution.pk}/").json()
    said = "Incorrect API key provided: [redacted] (sent to /v1/chat?key=[redacted])"
    assert run["status"] == "failed" and said in run["error_message"]
    assert run["output_data"]["upstream"]["error"]["message"] == said
    for part in ("sk-live", "tail", "%2F"):
        assert part not in json.dumps(run)
