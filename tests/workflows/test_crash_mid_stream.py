"""A server process killed with SIGKILL in the middle of a model call. What the call sent and
streamed is on disk before the crash: its prompt estimate on its node row (written as the call started, in the
run's write before it waits) and its stream so far (carried by the heartbeat). The recovery sweep ends the run
from these: the call's tokens and cost, estimated and flagged, on the LLM call, the node, the execution, the
assistant message (with the partial reply) and the conversation, and every aggregate exact (I5, I1–I3)."""
import json
import threading
import time
from decimal import Decimal
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.db import connections

from conversations.models import Message
from engine.usage import estimate_tokens
from tests.factories import ApiTokenFactory
from tests.invariants import assert_all
from tests.workflows.test_background_runs import wait_for
from tests.workflows.test_sweep import beats_stopped, sweeps_a_sweep_interval_apart
from workflows import heartbeat, recorder
from workflows.models import LLMCall, NodeExecution, WorkflowExecution
from workflows.services.recovery import HEARTBEAT_LOST_S
from workflows.services.run_requests import ChatRequest
from workflows.services.runs import execution_create, execution_stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_resume_attempts_left(settings):
    """The sweep ends the run (its re-queues, CHATTER_RESUME_ATTEMPTS, used up): what a crash leaves on disk is
    what the run ends with (a run that goes on instead: tests/workflows/test_crash_resume.py)."""
    settings.CHATTER_RESUME_ATTEMPTS = 0

# 60 words, one every 0.25 s: the stream lasts 15 s, past the heartbeat's first beat (5 s after the run starts).
REPLY = " ".join(f"word{n}" for n in range(60))
USAGE = {"prompt_tokens": 100, "completion_tokens": 120, "total_tokens": 220}


def price(prompt_tokens, completion_tokens) -> Decimal:  # the seeded gpt-4o-mini row: $0.15 in, $0.60 out
    return ((prompt_tokens * Decimal("0.15") + completion_tokens * Decimal("0.60")) / 10**6).quantize(
        Decimal("0.00000001"))


def streamed_tokens(response, received: list[str]) -> None:
    """Collect the text of `token` frames until the connection dies with its server."""
    try:
        for line in response.iter_lines():
            if line.startswith("data: "):
                envelope = json.loads(line[len("data: "):])
                if envelope["event"] == "token":
                    received.append(envelope["data"]["text"])
    except httpx.HTTPError:
        pass


def test_a_server_killed_mid_stream_leaves_what_was_sent_and_streamed_for_the_sweep(alice, daphne_server,
                                                                                   openai_stub):
    openai_stub.reply(content=REPLY, usage=USAGE, chunk_delay_s=0.25)
    server = daphne_server(OPENAI_BASE_URL=openai_stub.base_url, OPENAI_API_KEY="sk-test-not-a-real-key")
    token = ApiTokenFactory(user=alice).key
    client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Token {token}"}, timeout=30)
    received: list[str] = []
    with client.stream("POST", "/api/v1/chat/", json={
            "message": "Count for me", "stream": True, "provider": "openai", "model": "gpt-4o-mini"}) as response:
        assert response.status_code == 200
        reader = threading.Thread(target=streamed_tokens, args=(response, received), daemon=True)
        reader.start()
        running = WorkflowExecution.objects.filter(owner=alice, status="running")
        # The heartbeat has carried part of the stream: the process dies in the middle of the call.
        assert wait_for(lambda: any((row.stream_progress or {}).get("text") for row in running.all()), timeout=20), \
            server.log.read_text()
        server.process.kill()
        server.process.wait(10)
        reader.join(10)
    client.close()

    execution = running.all().get()
    progress = execution.stream_progress
    assert execution.llm_calls == 0 and execution.total_tokens == 0  # the call never ended in its process
    in_flight = NodeExecution.objects.get(execution=execution, node_type="model", status="running")
    sent = openai_stub.last_request.body["messages"]
    prompt_estimate = sum(estimate_tokens(m["content"]) + 4 for m in sent)
    assert in_flight.output["call_in_flight"]["prompt_tokens"] == prompt_estimate

    assert [e.pk for e in sweeps_a_sweep_interval_apart(from_s=HEARTBEAT_LOST_S + 1)] == [execution.pk]

    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == ("failed", "interrupted")
    call = LLMCall.objects.get(execution=execution)
    partial = progress["text"]
    assert partial and REPLY.startswith(partial) and "".join(received).startswith(partial)
    assert (call.estimated, call.prompt_tokens, call.completion_tokens) == (
        True, prompt_estimate, estimate_tokens(partial))
    assert call.completion_tokens > 0 and call.cost == price(call.prompt_tokens, call.completion_tokens) > 0
    assert (call.provider, call.requested_model) == ("openai", "gpt-4o-mini")
    reply = Message.objects.get(execution=execution, role="assistant")
    assert (reply.content, reply.usage_estimated, reply.prompt_tokens, reply.completion_tokens, reply.cost) == (
        partial, True, call.prompt_tokens, call.completion_tokens, call.cost)
    assert "interrupted" in reply.error_message
    assert (execution.llm_calls, execution.prompt_tokens, execution.completion_tokens, execution.cost) == (
        1, call.prompt_tokens, call.completion_tokens, call.cost)
    assert (reply.conversation.total_tokens, reply.conversation.total_cost) == (call.total_tokens, call.cost)
    in_flight.refresh_from_db()
    assert (in_flight.status, in_flight.total_tokens, in_flight.cost) == ("failed", call.total_tokens, call.cost)
    assert execution.stream_progress == {}
    assert_all(execution)
    out = StringIO()
    call_command("reconcile_aggregates", stdout=out, stderr=out)  # exits 1 on any drift


def test_a_call_swept_while_streaming_tool_call_fragments_is_estimated_from_them(alice, openai_stub, settings,
                                                                                  monkeypatch):
    """No text, only a tool call's fragments had streamed when the run was swept: the heartbeat carried them, and
    the call is estimated from its prompt and those fragments (in process; the worker's next write then collides
    with the sweep's and it stops)."""
    monkeypatch.setattr(heartbeat, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(recorder, "heartbeat", heartbeat._Heartbeat())  # not one still asleep for 5 s
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = openai_stub.base_url, "sk-test-not-a-real-key"
    arguments = json.dumps({"expression": "12*7 + 1000 - 3 * 4 / 2"})
    openai_stub.reply(tool_calls=[{"name": "calculator", "arguments": arguments}], usage=USAGE,
                      argument_chunk_chars=2, chunk_delay_s=0.2)
    execution = execution_create(ChatRequest(owner=alice, message="What is 12*7?", mode="stream",
                                             config={"provider": "openai", "model": "gpt-4o-mini"}))
    envelopes: list[dict] = []

    def read() -> None:
        try:
            envelopes.extend(execution_stream(execution_id=execution.pk))
        finally:
            connections.close_all()  # this thread's own

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    row = WorkflowExecution.objects.filter(pk=execution.pk)
    assert wait_for(lambda: len(row.get().stream_progress.get("tool_call_text", "")) > len("calculator") + 4,
                    timeout=15)
    beats_stopped(execution, recorder.heartbeat)  # cut off from the database, as far as the sweeps can tell
    carried = row.get().stream_progress

    assert [e.pk for e in sweeps_a_sweep_interval_apart(from_s=HEARTBEAT_LOST_S + 1)] == [execution.pk]
    reader.join(15)
    time.sleep(1)  # the worker sees the sweep at its next chunk (it polls the row every 0.2 s) and stops

    execution.refresh_from_db()
    assert (execution.status, execution.error_type) == ("failed", "interrupted")
    assert envelopes[-1]["event"] == "workflow_failed"
    assert carried["text"] == "" and ("calculator" + arguments).startswith(carried["tool_call_text"])
    call = LLMCall.objects.get(execution=execution)
    assert call.estimated and call.prompt_tokens > 0
    assert estimate_tokens(carried["tool_call_text"]) <= call.completion_tokens < estimate_tokens(
        "calculator" + arguments)
    assert call.cost == price(call.prompt_tokens, call.completion_tokens)
    reply = Message.objects.get(execution=execution, role="assistant")
    assert (reply.content, reply.usage_estimated) == ("", True)
    assert (reply.total_tokens, reply.cost) == (call.total_tokens, call.cost) == (
        execution.total_tokens, execution.cost)
    assert_all(execution)
