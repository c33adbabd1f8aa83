"""Issue 47, OpenTelemetry traces: real servers export to a real OTLP/HTTP receiver on loopback (tests/otlp_receiver.py),
each span decoded from the protobuf the official exporter sent. A caller's traceparent makes Chatter's spans part of
its trace; runs, nodes, LLM calls (GenAI attributes) and tool calls are spans; the trace id is kept on the run."""
import ipaddress
import json
import secrets
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from tests import launcher
from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, server_env, start_worker, stop_process
from tests.otlp_receiver import OTLPReceiver
from tests.webhook_receiver import RECEIVER_NETWORK, RECEIVER_NETWORKS
from tests.webhook_receiver import Receiver as WebhookReceiver
from workflows.models import WorkflowExecution

GRAPHS = Path(__file__).parent / "agent_server" / "graphs" / "langgraph.json"
USAGE = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
SERVER, CLIENT = 2, 3  # OTLP's span kinds
CAPTURING = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
             "CHATTER_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32"}


@pytest.fixture(scope="module")
def receiver():
    started = OTLPReceiver().start()
    yield started
    started.stop()


def tracing_env(receiver, openai_stub) -> dict:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "20",
            "OTEL_SERVICE_NAME": "chatter-under-test", "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-key=test-key",
            "OPENAI_BASE_URL": openai_stub.base_url, "OPENAI_API_KEY": "sk-test-not-a-real-key",
            "CHATTER_PROVIDER_MAX_RETRIES": "0", "CHATTER_GRAPHS": str(GRAPHS)}


@pytest.fixture
def traced(shared_daphne_server, session_openai_stub, receiver, alice):
    """A server (one for this module) exporting its traces to `receiver`, and alice's key."""
    server = shared_daphne_server(**tracing_env(receiver, session_openai_stub))
    server.key = ApiTokenFactory(user=alice, scopes=["chat", "workflows", "gateway", "runs", "read"]).key
    return server


@pytest.fixture
def capturing(shared_daphne_server, session_openai_stub, receiver, alice):
    """A server exporting to `receiver` that records message content (the operator's opt-in) and may call the test
    MCP server (on loopback), and alice's key."""
    server = shared_daphne_server(**tracing_env(receiver, session_openai_stub), **CAPTURING)
    server.key = ApiTokenFactory(user=alice, scopes=["chat", "workflows", "runs", "read"]).key
    return server


def caller() -> tuple[str, str, dict]:
    """A caller's trace id, span id and the headers that carry them (W3C Trace Context)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "vendor=caller"}


def named(spans, prefix):
    return [span for span in spans if span.name.startswith(prefix)]


def one(spans, prefix):
    found = named(spans, prefix)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def assert_chat_span(span, *, parents, finish_reason: str | None = None) -> None:
    attributes = span.attributes
    assert span.kind == CLIENT and span.parent_span_id in parents
    assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini" and attributes["gen_ai.response.model"]
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (11, 5)
    assert "chatter.cost" in attributes
    if finish_reason is not None:
        assert attributes["gen_ai.response.finish_reasons"] == [finish_reason]


def test_item_tracing_chat_turn_with_a_tool_call_is_a_child_of_the_callers_span(traced, session_openai_stub,
                                                                                receiver, client, staff):
    stub = session_openai_stub
    stub.reply(tool_calls=[{"name": "calculator", "arguments": {"expression": "12*7"}}], usage=USAGE)
    stub.reply(content="It is 84.", usage=USAGE)
    trace_id, parent, headers = caller()

    response = httpx.post(f"{traced.base_url}/api/v1/chat/", timeout=60,
                          json={"message": "What is 12*7?", "provider": "openai", "model": "gpt-4o-mini"},
                          headers={"Authorization": f"Token {traced.key}", **headers})

    assert response.status_code == 201, response.text
    execution = WorkflowExecution.objects.get(trace_id=trace_id)
    spans = receiver.wait_for(trace_id, "POST /api/v1/chat", "invoke_agent", "execute_tool", "node")
    request = one(spans, "POST /api/v1/chat")
    assert request.kind == SERVER and request.parent_span_id == parent and request.service == "chatter-under-test"
    assert receiver.headers[-1]["x-collector-key"] == "test-key"  # OTEL_EXPORTER_OTLP_HEADERS
    assert request.attributes["http.response.status_code"] == 201
    run = one(spans, "invoke_agent universal_chat")
    assert run.parent_span_id == request.span_id
    assert run.attributes["chatter.execution.id"] == str(execution.pk)
    assert run.attributes["chatter.template"] == "universal_chat"
    assert run.attributes["gen_ai.conversation.id"] == str(execution.conversation_id)
    assert run.attributes["chatter.status"] == "completed"
    assert (run.attributes["gen_ai.usage.input_tokens"], run.attributes["chatter.total_tokens"]) == (22, 32)
    nodes = {span.span_id: span for span in named(spans, "node ")}
    assert nodes and all(node.parent_span_id == run.span_id for node in nodes.values())
    asked, answered = sorted(named(spans, "chat "), key=lambda span: span.start_ns)
    assert_chat_span(asked, parents=nodes, finish_reason="tool_calls")
    assert_chat_span(answered, parents=nodes, finish_reason="stop")
    tool = one(spans, "execute_tool calculator")
    assert tool.parent_span_id in nodes and tool.attributes["gen_ai.tool.name"] == "calculator"
    assert "gen_ai.tool.call.arguments" not in tool.attributes  # content only when the operator opts in
    # the provider was called with the trace's context; the API shows the run's trace id
    assert all(request.headers["traceparent"].split("-")[1] == trace_id for request in stub.requests[-2:])
    assert all(request.headers["tracestate"] == "vendor=caller" for request in stub.requests[-2:])
    assert run.attributes["chatter.cost"] == float(execution.cost) > 0
    shown = httpx.get(f"{traced.base_url}/api/v1/executions/{execution.pk}/",
                      headers={"Authorization": f"Token {traced.key}"}).json()
    assert shown["trace_id"] == trace_id
    client.force_login(staff)  # and so does the run's admin page
    page = client.get(f"/admin/workflows/workflowexecution/{execution.pk}/change/")
    assert page.status_code == 200 and trace_id in page.content.decode()


@pytest.mark.parametrize("how", ["wait", "stream"])
def test_item_tracing_python_graph_run_has_the_same_spans(traced, session_openai_stub, receiver, how):
    stub = session_openai_stub
    stub.reply(tool_calls=[{"name": "multiply", "arguments": {"a": 12, "b": 7}}], usage=USAGE)
    stub.reply(content="84.", usage=USAGE)
    trace_id, parent, headers = caller()

    with httpx.stream("POST", f"{traced.base_url}/langgraph/runs/{how}", timeout=60, json={
            "assistant_id": "calculator_agent", "input": {"messages": [{"role": "user", "content": "12*7?"}]}},
            headers={"x-api-key": traced.key, **headers}) as response:
        text = response.read().decode()

    assert response.status_code == 200, text
    assert ("event: " in text) is (how == "stream")
    spans = receiver.wait_for(trace_id, f"POST /langgraph/runs/{how}", "invoke_agent calculator_agent",
                              "execute_tool multiply")
    assert one(spans, "invoke_agent").attributes["chatter.status"] == "completed"
    run = one(spans, "invoke_agent calculator_agent")
    assert run.parent_span_id == one(spans, "POST /langgraph").span_id
    assert one(spans, "POST /langgraph").parent_span_id == parent
    nodes = {span.span_id: span for span in named(spans, "node ")}
    assert {span.attributes["chatter.node.id"] for span in nodes.values()} >= {"agent", "tools"}
    calls = named(spans, "chat ")
    assert len(calls) == 2
    for call in calls:
        assert_chat_span(call, parents=nodes)
    assert one(spans, "execute_tool multiply").parent_span_id in nodes


def gateway_spans(receiver, trace_id, parent):
    """A gateway call's spans: its request's (a child of the caller's), its run's and its one chat call's."""
    spans = receiver.wait_for(trace_id, "POST /v1/chat/completions", "invoke_agent", "chat ")
    request = one(spans, "POST /v1/")
    run = one(spans, "invoke_agent")
    assert request.parent_span_id == parent and run.parent_span_id == request.span_id
    call = one(spans, "chat ")
    assert_chat_span(call, parents={s.span_id for s in named(spans, "node ")} | {run.span_id}, finish_reason="stop")
    return run, call


def test_item_tracing_gateway_pass_through_call_sync_and_streamed(traced, session_openai_stub, receiver):
    """/v1/chat/completions to the `openai` upstream, not routed, in no conversation: the pass-through
    (gateway.passthrough, no graph), answered whole and streamed."""
    stub = session_openai_stub
    for stream in (False, True):
        stub.reply(content="Hello.", usage=USAGE)
        trace_id, parent, headers = caller()
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        with httpx.stream("POST", f"{traced.base_url}/v1/chat/completions", timeout=60, json=body,
                          headers={"Authorization": f"Bearer {traced.key}", **headers}) as response:
            text = response.read().decode()
        assert response.status_code == 200, text
        assert ("data: [DONE]" in text) is stream

        run, call = gateway_spans(receiver, trace_id, parent)
        execution = WorkflowExecution.objects.get(pk=response.headers["x-chatter-execution"])
        assert execution.trace_id == trace_id and run.attributes["chatter.execution.id"] == str(execution.pk)
        assert run.attributes["chatter.mode"] == ("stream" if stream else "sync")
        assert run.attributes["chatter.status"] == "completed"
        assert call.attributes["gen_ai.request.temperature"] == 0.5
        sent = stub.last_request.headers
        assert sent["user-agent"] == "chatter-gateway"  # the pass-through's own clients: no graph, no OpenAI SDK
        assert sent["traceparent"].split("-")[1] == trace_id


def test_item_tracing_gateway_run_path_call(traced, session_openai_stub, receiver, alice):
    """A /v1/chat/completions call kept in a conversation takes the run path (a graph, the OpenAI client)."""
    from tests.factories import ConversationFactory

    session_openai_stub.reply(content="Hello.", usage=USAGE)
    trace_id, parent, headers = caller()
    conversation = ConversationFactory(owner=alice)

    response = httpx.post(f"{traced.base_url}/v1/chat/completions", timeout=60, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5},
        headers={"Authorization": f"Bearer {traced.key}", "X-Chatter-Conversation": str(conversation.pk), **headers})

    assert response.status_code == 200, response.text
    run, call = gateway_spans(receiver, trace_id, parent)
    execution = WorkflowExecution.objects.get(pk=response.headers["x-chatter-execution"])
    assert execution.trace_id == trace_id and execution.conversation_id == conversation.pk
    assert run.attributes["gen_ai.conversation.id"] == str(conversation.pk)
    assert call.attributes["gen_ai.request.temperature"] == 0.5
    sent = session_openai_stub.last_request.headers
    assert sent["user-agent"].startswith("OpenAI/Python")  # the OpenAI client of the run path
    assert sent["traceparent"].split("-")[1] == trace_id


@pytest.fixture
def routed_traced(shared_daphne_server, session_openai_stub, receiver, alice, tmp_path_factory):
    """A traced server whose deployments file routes gpt-4o-mini-2025-01-01 to a failing OpenAI-compatible
    deployment, with a fallback to an Anthropic deployment that answers; the two stubs, and alice's gateway key."""
    from tests.openai_stub import OpenAIStub

    with OpenAIStub() as down, OpenAIStub() as claude:
        run = secrets.token_hex(3)
        models = {"gpt-4o-mini-2025-01-01": {
            "deployments": [{"name": f"a-{run}", "base_url": down.base_url, "api_key_env": "ROUTE_KEY_A"}],
            "fallbacks": ["claude-3-5-haiku-latest"]},
            "claude-3-5-haiku-latest": {"deployments": [{"name": f"b-{run}", "provider": "anthropic",
                                                         "base_url": claude.root_url, "api_key_env": "ROUTE_KEY_B"}]}}
        path = tmp_path_factory.mktemp("traced-routing") / "deployments.json"
        path.write_text(json.dumps({"models": models}))
        server = shared_daphne_server(**tracing_env(receiver, session_openai_stub), CHATTER_DEPLOYMENTS=str(path),
                                      ROUTE_KEY_A="sk-route-a-not-a-real-key", ROUTE_KEY_B="sk-route-b-not-a-real-key")
        server.key = ApiTokenFactory(user=alice, scopes=["gateway", "chat"]).key
        yield server, down, claude, run


ROUTED_CALLS = {  # surface: (path, body); a whole reply on the gateway's, streamed (engine.runtime) on the others
    "gateway": ("/v1/chat/completions", {"model": "gpt-4o-mini-2025-01-01", "messages": [{"role": "user",
                                                                                         "content": "Hi"}]}),
    "gateway streamed": ("/v1/chat/completions", {"model": "gpt-4o-mini-2025-01-01", "stream": True,
                                                  "messages": [{"role": "user", "content": "Hi"}]}),
    "chat turn": ("/api/v1/chat/", {"message": "Hi", "provider": "openai", "model": "gpt-4o-mini-2025-01-01"}),
}


def routed_call(server, surface: str) -> WorkflowExecution:
    """One of ROUTED_CALLS, made in a trace of its caller's: its run (its trace_id the caller's)."""
    trace_id, _, headers = caller()
    path, body = ROUTED_CALLS[surface]
    with httpx.stream("POST", f"{server.base_url}{path}", timeout=60, json=body,
                      headers={"Authorization": f"Bearer {server.key}", **headers}) as response:
        text = response.read().decode()
    assert response.status_code in (200, 201), text
    return WorkflowExecution.objects.get(trace_id=trace_id)


@pytest.mark.parametrize("surface", ROUTED_CALLS)
def test_item_tracing_each_try_of_a_routed_call_is_a_chat_span_the_failed_one_with_its_error(
        routed_traced, receiver, surface):
    """A routed call whose first deployment fails (a 502) and whose fallback answers: a `chat` span per try, as the
    run's provider attempts list them, under the call's node, one after the other; the failed try's with the error
    status and its error.type and no usage, the answering one's as a call's span always is, with the tokens and cost
    of its row: the spans' costs and tokens add up to the run's, once. No key is in any span."""
    from workflows.models import LLMCall, ProviderAttempt

    server, down, claude, run = routed_traced
    down.always(status=502)
    claude.always(content="84.", usage={"input_tokens": 11, "output_tokens": 5}, model="claude-3-5-haiku-20241022")

    execution = routed_call(server, surface)

    assert execution.status == "completed"
    failed, answered = ProviderAttempt.objects.filter(execution=execution).order_by("id")
    assert (failed.ok, failed.deployment, answered.ok) == (False, f"gpt-4o-mini-2025-01-01/a-{run}", True)
    row = LLMCall.objects.get(execution=execution)
    spans = receiver.wait_for(execution.trace_id, "invoke_agent", "chat ")
    tried, answer = sorted(named(spans, "chat "), key=lambda span: span.start_ns)
    assert tried.parent_span_id == answer.parent_span_id in {span.span_id for span in named(spans, "node ")}
    assert tried.kind == answer.kind == CLIENT and tried.end_ns <= answer.start_ns
    assert tried.status_code == 2 and answer.status_code != 2
    assert tried.attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini-2025-01-01",
        "gen_ai.provider.name": failed.provider, "chatter.deployment": failed.deployment,
        "error.type": failed.error_type, **({"gen_ai.request.max_tokens": answer.attributes[
            "gen_ai.request.max_tokens"]} if "gen_ai.request.max_tokens" in answer.attributes else {}),
        **({"gen_ai.request.temperature": answer.attributes["gen_ai.request.temperature"]}
           if "gen_ai.request.temperature" in answer.attributes else {})}
    assert failed.error_type == "provider_error" and "502" in tried.status_message
    assert (answer.attributes["gen_ai.provider.name"], answer.attributes["chatter.deployment"]) == (
        answered.provider, answered.deployment) == ("anthropic", f"claude-3-5-haiku-latest/b-{run}")
    assert answer.attributes["gen_ai.response.model"] == row.model == "claude-3-5-haiku-20241022"
    assert (answer.attributes["gen_ai.usage.input_tokens"], answer.attributes["gen_ai.usage.output_tokens"]) == (
        row.prompt_tokens, row.completion_tokens) == (11, 5)
    assert answer.attributes["chatter.cost"] == float(row.cost) > 0
    calls = named(spans, "chat ")  # once each: the run's totals are the calls' sums
    invoked = one(spans, "invoke_agent")
    assert sum(span.attributes.get("chatter.cost", 0) for span in calls) == invoked.attributes["chatter.cost"] == \
        float(execution.cost)
    assert sum(span.attributes.get("gen_ai.usage.input_tokens", 0) for span in calls) == \
        invoked.attributes["gen_ai.usage.input_tokens"] == execution.prompt_tokens
    shown = json.dumps([[span.attributes, span.status_message] for span in spans])
    assert not [key for key in ("sk-route-a-not-a-real-key", "sk-route-b-not-a-real-key", "sk-test-not-a-real-key",
                                server.key) if key in shown]


def test_item_tracing_a_routed_call_every_deployment_failed_is_a_failed_span_per_try_and_no_more(routed_traced,
                                                                                                  receiver):
    """Both deployments fail: the call's spans are its two tries, each failed with its error.type, and no span for
    a try that was never made."""
    from workflows.models import ProviderAttempt

    server, down, claude, run = routed_traced
    down.always(status=502)
    claude.always(status=503)
    trace_id, _, headers = caller()

    response = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=60, json=ROUTED_CALLS["gateway"][1],
                          headers={"Authorization": f"Bearer {server.key}", **headers})

    assert response.status_code >= 500, response.text
    execution = WorkflowExecution.objects.get(trace_id=trace_id)
    attempts = list(ProviderAttempt.objects.filter(execution=execution).order_by("id"))
    assert [(attempt.ok, attempt.deployment) for attempt in attempts] == [
        (False, f"gpt-4o-mini-2025-01-01/a-{run}"), (False, f"claude-3-5-haiku-latest/b-{run}")]
    spans = receiver.wait_for(trace_id, "invoke_agent", "chat ")
    calls = sorted(named(spans, "chat "), key=lambda span: span.start_ns)
    assert [(span.attributes["chatter.deployment"], span.attributes["error.type"], span.status_code)
            for span in calls] == [(attempt.deployment, attempt.error_type, 2) for attempt in attempts]
    assert calls[0].end_ns <= calls[1].start_ns and len({span.parent_span_id for span in calls}) == 1
    assert not [span for span in calls if "gen_ai.usage.input_tokens" in span.attributes]
    assert one(spans, "invoke_agent").attributes["error.type"] == execution.error_type


CUT_OFF = {  # which deployment's reply breaks off: the first one's, or (the first one down) its fallback's
    "deployment": ({"content": "The answer is eighty-four, as it happens.", "usage": USAGE, "fault": "reset",
                    "fault_after": 3}, {}),
    "fallback": ({"status": 502}, {"fault": "reset", "fault_after": 4}),
}


@pytest.mark.parametrize("breaks", CUT_OFF)
@pytest.mark.parametrize("surface", ["gateway streamed", "chat turn"])
def test_item_tracing_a_routed_reply_cut_off_mid_stream_is_a_failed_span_with_the_usage_so_far(routed_traced,
                                                                                                receiver, surface,
                                                                                                breaks):
    """A routed call's reply breaks off mid-stream: the call is that reply (its text cannot be taken back), so no
    other deployment is tried after it. Its try's span ends failed, with its error.type and the error as its status,
    and the usage so far its row bills (a try before it that failed is a failed span of its own, with no usage); its
    node's and its run's spans end failed too, the run failed and accounted: its tokens and cost are the call's,
    once."""
    from tests.invariants import assert_all
    from workflows.models import LLMCall, ProviderAttempt

    server, down, claude, run = routed_traced
    first, fallback = CUT_OFF[breaks]
    down.always(**first)
    claude.always(content="The answer is eighty-four, as it happens.", usage={"input_tokens": 11, "output_tokens": 9},
                  model="claude-3-5-haiku-20241022", **fallback)

    execution = routed_call(server, surface)

    assert (execution.status, execution.error_type) == ("failed", "provider_error"), execution.error_message
    attempts = list(ProviderAttempt.objects.filter(execution=execution).order_by("id"))
    cut = attempts[-1]
    assert [(attempt.ok, attempt.deployment) for attempt in attempts] == [
        (False, f"gpt-4o-mini-2025-01-01/a-{run}"), *([(False, f"claude-3-5-haiku-latest/b-{run}")] * (
            breaks == "fallback"))]
    assert (len(down.requests), len(claude.requests)) == (1, int(breaks == "fallback"))
    row = LLMCall.objects.get(execution=execution)
    assert (row.deployment, row.estimated) == (cut.deployment, True) and row.completion_tokens > 0
    spans = receiver.wait_for(execution.trace_id, "invoke_agent", "node model", "chat ")
    tries = sorted(named(spans, "chat "), key=lambda span: span.start_ns)
    node, invoked = one(spans, "node model"), one(spans, "invoke_agent")
    assert [(span.attributes["chatter.deployment"], span.attributes["error.type"], span.status_code,
             span.status_message) for span in tries] == [
        (attempt.deployment, attempt.error_type, 2, attempt.error[:500]) for attempt in attempts]  # 2: ERROR
    assert cut.error and all(span.parent_span_id == node.span_id for span in tries)
    assert node.parent_span_id == invoked.span_id and node.status_code == invoked.status_code == 2
    assert invoked.attributes["error.type"] == execution.error_type
    call = tries[-1]
    assert [span for span in tries[:-1] if "gen_ai.usage.input_tokens" in span.attributes] == []
    assert (call.attributes["gen_ai.usage.input_tokens"], call.attributes["gen_ai.usage.output_tokens"]) == (
        row.prompt_tokens, row.completion_tokens) == (execution.prompt_tokens, execution.completion_tokens)
    assert call.attributes["chatter.cost"] == float(row.cost) == invoked.attributes["chatter.cost"] == \
        float(execution.cost) > 0
    assert invoked.attributes["chatter.llm_calls"] == execution.llm_calls == 1
    assert_all(execution)


FAILED_CALLS = {  # surface: (path, body, the run's error_type)
    "run": ("/api/v1/chat/", {"message": "Hi", "provider": "openai", "model": "gpt-4o-mini"}, "provider_error"),
    "pass-through": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                     "provider_error"),
    # A registered Python graph's own chat model: its client's exception, which the run records as internal_error.
    "python graph": ("/langgraph/runs/wait", {"assistant_id": "calculator_agent",
                                              "input": {"messages": [{"role": "user", "content": "12*7?"}]}},
                     "internal_error"),
}


@pytest.mark.parametrize("surface", FAILED_CALLS)
def test_item_tracing_a_failed_call_has_the_error_type_its_run_records(traced, session_openai_stub, receiver, surface):
    """A call the provider failed (a 500): its chat span's error.type is the classification its run stores, on a
    chat turn's run, the gateway's pass-through and a Python graph's run."""
    session_openai_stub.always(status=500)
    trace_id, _, headers = caller()
    path, body, error_type = FAILED_CALLS[surface]

    httpx.post(f"{traced.base_url}{path}", timeout=60, json=body,
               headers={"Authorization": f"Bearer {traced.key}", "x-api-key": traced.key, **headers})

    execution = WorkflowExecution.objects.get(trace_id=trace_id)
    assert (execution.status, execution.error_type) == ("failed", error_type), execution.error_message
    spans = receiver.wait_for(trace_id, "invoke_agent", "chat ")
    call, run = one(spans, "chat "), one(spans, "invoke_agent")
    assert call.status_code == run.status_code == 2  # ERROR
    assert call.attributes["error.type"] == run.attributes["error.type"] == execution.error_type


def test_item_tracing_a_streamed_chat_turn_is_a_child_of_the_callers_span(traced, session_openai_stub, receiver):
    session_openai_stub.reply(content="Streamed hello.", usage=USAGE)
    trace_id, parent, headers = caller()

    with httpx.stream("POST", f"{traced.base_url}/api/v1/chat/", timeout=60, json={
            "message": "Hi", "provider": "openai", "model": "gpt-4o-mini", "stream": True},
            headers={"Authorization": f"Token {traced.key}", **headers}) as response:
        text = response.read().decode()
    assert response.status_code == 200 and "workflow_completed" in text, text

    spans = receiver.wait_for(trace_id, "POST /api/v1/chat", "invoke_agent universal_chat", "chat ")
    request, run = one(spans, "POST /api/v1/chat"), one(spans, "invoke_agent")
    assert request.parent_span_id == parent and run.parent_span_id == request.span_id
    assert run.attributes["chatter.mode"] == "stream" and run.attributes["chatter.status"] == "completed"
    assert_chat_span(one(spans, "chat "), parents={s.span_id for s in named(spans, "node ")}, finish_reason="stop")
    execution = WorkflowExecution.objects.get(pk=run.attributes["chatter.execution.id"])
    assert execution.trace_id == trace_id
    assert session_openai_stub.last_request.headers["traceparent"].split("-")[1] == trace_id


def test_item_tracing_an_mcp_tool_call_and_message_content_when_opted_in(capturing, session_openai_stub, receiver,
                                                                        alice, mcp_server, settings):
    """A chat turn calling an MCP server's tool: its `execute_tool` span (an extension), the MCP server called with
    the run's traceparent; the operator opted in to message content, so the reply's text and the tool's arguments
    and result are on their spans."""
    from tools.services import mcp_server_create

    settings.CHATTER_OUTBOUND_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    tracker = mcp_server_create(owner=alice, name="tracker", url=mcp_server.url)
    stub = session_openai_stub
    stub.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}}], usage=USAGE)
    stub.reply(content="It is 42.", usage=USAGE)
    trace_id, parent, headers = caller()

    response = httpx.post(f"{capturing.base_url}/api/v1/chat/", timeout=60, json={
        "message": "What is 2 + 40?", "provider": "openai", "model": "gpt-4o-mini", "allowed_tools": ["tracker__add"]},
        headers={"Authorization": f"Token {capturing.key}", **headers})

    assert response.status_code == 201, response.text
    assert mcp_server.calls == [("add", {"a": 2, "b": 40})]
    spans = receiver.wait_for(trace_id, "POST /api/v1/chat", "invoke_agent", "execute_tool tracker__add", "node")
    run = one(spans, "invoke_agent")
    assert one(spans, "POST /api/v1/chat").parent_span_id == parent
    nodes = {span.span_id for span in named(spans, "node ")}
    tool = one(spans, "execute_tool tracker__add")
    assert tool.parent_span_id in nodes and tool.status_code != 2
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "tracker__add" and tool.attributes["gen_ai.tool.type"] == "extension"
    assert tool.attributes["chatter.mcp_server.id"] == str(tracker.pk)
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"a": 2, "b": 40}
    assert "42" in tool.attributes["gen_ai.tool.call.result"]
    answered = max(named(spans, "chat "), key=lambda span: span.start_ns)
    assert_chat_span(answered, parents=nodes, finish_reason="stop")
    assert json.loads(answered.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "It is 42."}]}]
    # the MCP server's requests of this run carried its trace (its tools/call, at least)
    seen = [value for value in mcp_server.headers_seen("traceparent") if value]
    assert seen and all(value.split("-")[1] == trace_id for value in seen), mcp_server.headers_seen("traceparent")
    assert run.attributes["chatter.tool_calls"] == 1


def test_item_tracing_a_retrieval_has_its_span_and_its_embedding_call(capturing, receiver, alice):
    """A workflow's retrieval node: a `retrieval` span after its query's `embeddings` call, in the node's span."""
    from knowledge.ingest import document_ingest
    from knowledge.services import collection_create, document_add
    from tests.factories import WorkflowDefinitionFactory

    collection = collection_create(owner=alice, name="manuals", embedding_model="local/local-embed-1")
    document, _ = document_add(collection=collection, actor=alice, title="Seal",
                               text="A cracked kettle seal lets water out of the kettle.")
    assert document_ingest(document).status == "ready"
    definition = WorkflowDefinitionFactory(owner=alice, nodes=[
        {"id": "start", "type": "start"}, {"id": "search", "type": "retrieval", "config": {"collections": ["manuals"]}},
        {"id": "answer", "type": "model"}, {"id": "end", "type": "end"}], edges=[
        {"source": "start", "target": "search"}, {"source": "search", "target": "answer"},
        {"source": "answer", "target": "end"}])
    trace_id, parent, headers = caller()

    response = httpx.post(f"{capturing.base_url}/api/v1/chat/", timeout=60, json={
        "message": "why does my kettle leak?", "provider": "local", "definition_id": str(definition.pk)},
        headers={"Authorization": f"Token {capturing.key}", **headers})

    assert response.status_code == 201, response.text
    spans = receiver.wait_for(trace_id, "POST /api/v1/chat", "invoke_agent", "retrieval", "embeddings", "node search")
    assert one(spans, "POST /api/v1/chat").parent_span_id == parent
    search = one(spans, "node search")
    retrieval, embedding = one(spans, "retrieval"), one(spans, "embeddings")
    assert retrieval.parent_span_id == embedding.parent_span_id == search.span_id
    assert retrieval.attributes["gen_ai.operation.name"] == "retrieval"
    assert retrieval.attributes["gen_ai.data_source.id"] == "manuals"
    assert retrieval.attributes["chatter.retrieval.chunks"] == 1
    assert retrieval.attributes["gen_ai.retrieval.query.text"] == "why does my kettle leak?"
    assert embedding.attributes["gen_ai.operation.name"] == "embeddings"
    assert embedding.attributes["gen_ai.provider.name"] == "local"
    assert embedding.attributes["gen_ai.request.model"] == "local-embed-1"
    assert embedding.attributes["gen_ai.usage.input_tokens"] > 0


def test_item_tracing_a_schedule_run_by_the_worker_keeps_its_trace(traced, session_openai_stub, receiver, alice,
                                                                   tmp_path, settings):
    """The schedule's tick (the worker's task, here in a process of its own) begins the run's trace, stored with the
    run; the worker that runs it later continues it, and the run's webhook, delivered later still by the worker,
    carries the run's span as its traceparent. A background turn, its request carrying the caller's traceparent, is
    run by the same worker in the caller's trace."""
    from workflows.services.schedules import schedule_create

    hooks = WebhookReceiver()
    settings.CHATTER_WEBHOOK_ALLOWED_NETWORKS, settings.CHATTER_WEBHOOK_SECRET = RECEIVER_NETWORKS, "whsec-test"

    session_openai_stub.always(content="Scheduled hello.", usage=USAGE)
    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = session_openai_stub.base_url, "sk-test-not-a-real-key"
    schedule = schedule_create(owner=alice, name="traced", cron="* * * * *", template="universal_chat",
                               run_input={"message": "Hi"}, config={"provider": "openai", "model": "gpt-4o-mini"},
                               webhook=hooks.url)
    schedule.__class__.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(minutes=1))
    worker_env = {**tracing_env(receiver, session_openai_stub), "CHATTER_WEBHOOK_ALLOWED_NETWORKS": RECEIVER_NETWORK,
                  "CHATTER_WEBHOOK_SECRET": "whsec-test"}
    env = server_env(tmp_path, **worker_env)
    tick = launcher.run([sys.executable, "-c", "import django; django.setup(); "
                         "from workflows.tasks import schedules_run_due_task; print(schedules_run_due_task())"],
                        cwd=ROOT, env=env, timeout=60)
    assert tick.stdout.strip() == "1", tick.stderr
    execution = WorkflowExecution.objects.get(schedule=schedule)
    assert execution.status == "pending" and len(execution.trace_id) == 32
    trace_id, parent, headers = caller()
    queued = httpx.post(f"{traced.base_url}/api/v1/chat/", timeout=60, json={
        "message": "Hi", "provider": "openai", "model": "gpt-4o-mini", "background": True},
        headers={"Authorization": f"Token {traced.key}", **headers})
    assert queued.status_code == 202, queued.text
    background = WorkflowExecution.objects.get(trace_id=trace_id)
    assert background.status == "pending"
    worker = start_worker(tmp_path, **worker_env)
    try:
        spans = receiver.wait_for(execution.trace_id, "schedule_run", "invoke_agent universal_chat", "chat ",
                                  timeout_s=60)
        hooks.wait_for(1, timeout=60)
        asked = receiver.wait_for(trace_id, "POST /api/v1/chat", "invoke_agent universal_chat", "chat ",
                                  timeout_s=60)
    finally:
        stop_process(worker)
        session_openai_stub.reset()
        hooks.server.shutdown()
    created, run = one(spans, "schedule_run"), one(spans, "invoke_agent")
    assert created.parent_span_id == "" and run.parent_span_id == created.span_id
    assert created.attributes["chatter.schedule.id"] == str(schedule.pk)
    assert_chat_span(one(spans, "chat "), parents={s.span_id for s in named(spans, "node ")})
    execution.refresh_from_db()
    assert execution.status == "completed" and run.attributes["chatter.status"] == "completed"
    headers, _ = hooks.received[0]
    assert headers["traceparent"].split("-")[1:3] == [execution.trace_id, run.span_id]
    request, run = one(asked, "POST /api/v1/chat"), one(asked, "invoke_agent")
    assert request.parent_span_id == parent and run.parent_span_id == request.span_id
    assert run.attributes["chatter.execution.id"] == str(background.pk) and run.start_ns >= request.end_ns
    assert_chat_span(one(asked, "chat "), parents={s.span_id for s in named(asked, "node ")})


# Chatter's tracing, the exporter, and what only setting up and using a tracer provider imports (the span
# processors, the propagators). Not opentelemetry.sdk.trace itself: langsmith (langchain-core's dependency) imports
# it at import time whenever the SDK is installed, and redis-py 8 opentelemetry.sdk.metrics (and its resources).
OFF_MODULES = ("core.otel", "workflows.run_spans", "opentelemetry.exporter", "opentelemetry.sdk.trace.export",
               "opentelemetry.propagate")


def chat_command(tmp_path, **environment) -> subprocess.Popen:
    """`manage.py chat` (a turn on the local provider, alice's) in a fresh process under `environment` (no OTLP
    variable of this process's), which then prints, last, the tracer provider's type and which of OFF_MODULES it
    imported."""
    probe = ("import django, json, sys; django.setup(); from django.core.management import call_command; "
             "call_command('chat', 'Hi', '--user', 'alice', '--provider', 'local'); "
             f"imported = sorted(m for m in sys.modules if m.startswith({OFF_MODULES!r})); "
             "from opentelemetry import trace; "
             "print(json.dumps([type(trace.get_tracer_provider()).__name__, imported]))")
    env = server_env(tmp_path, CHATTER_LOCAL_TOKEN_DELAY_MS="0", **environment)
    return subprocess.Popen([sys.executable, "-c", probe], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={
                                name: value for name, value in env.items()
                                if not (name.startswith("OTEL_EXPORTER_OTLP") and name not in environment)})


def printed_spans(out: str) -> list[dict]:
    """The spans the console exporter printed among a process's output: each a JSON object over several lines."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := out.find("{\n", at)) != -1:
        span, at = decoder.raw_decode(out, at)
        spans.append(span)
    return spans


def test_item_tracing_the_console_exporter_prints_spans_a_list_exports_to_each_and_none_to_none(
        transactional_db, receiver, alice, tmp_path):
    """OTEL_TRACES_EXPORTER as OpenTelemetry defines it, in fresh processes (`manage.py chat`): `console` prints a
    turn's spans to standard output (the SDK's console exporter), no endpoint needed, and sends nothing over OTLP;
    `otlp,console` does both, the same spans; `none` neither, an endpoint set."""
    environments = {"console": {"OTEL_TRACES_EXPORTER": "console"},
                    "both": {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint},
                    "none": {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}}
    processes = {name: chat_command(tmp_path, OTEL_SERVICE_NAME=f"chatter-{name}", **environment)
                 for name, environment in environments.items()}
    outputs = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs[name] = out

    printed = {name: printed_spans(out) for name, out in outputs.items()}
    for name in ("console", "both"):
        names = {span["name"] for span in printed[name]}
        assert {"create_run", "invoke_agent universal_chat"} <= names, outputs[name]
        assert all(any(span_name.startswith(prefix) for span_name in names) for prefix in ("node ", "chat ")), names
        assert {span["resource"]["attributes"]["service.name"] for span in printed[name]} == {f"chatter-{name}"}
    assert printed["none"] == [] and json.loads(outputs["none"].strip().splitlines()[-1])[0] == "ProxyTracerProvider"
    (trace_id,) = {span["context"]["trace_id"].removeprefix("0x") for span in printed["both"]}
    sent = receiver.wait_for(trace_id, "create_run", "invoke_agent universal_chat", "chat ")  # (sent at its exit)
    assert {span.name for span in sent} == {span["name"] for span in printed["both"]}
    assert not [span for span in receiver.spans if span.service in ("chatter-console", "chatter-none")]


def test_item_tracing_off_exports_nothing_and_never_imports_the_sdk(transactional_db, receiver, alice, tmp_path):
    """Off, a chat turn runs, nothing reaches the receiver, no trace id is kept, Chatter's tracing modules, the
    exporter and the SDK's span processors (OFF_MODULES) are never imported and no tracer provider is set up: in
    fresh processes (`manage.py chat`), one with OTEL_SDK_DISABLED=true and an endpoint set, one with no endpoint;
    and in this test process, whose settings name none."""
    from rest_framework.test import APIClient

    environments = [{"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SDK_DISABLED": "true"}, {}]
    probes = [chat_command(tmp_path, OTEL_SERVICE_NAME="chatter-off", **environment) for environment in environments]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiTokenFactory(user=alice, scopes=['chat']).key}")
    trace_id, _, headers = caller()
    response = api.post("/api/v1/chat/", {"message": "Hi", "provider": "local"}, format="json",
                        headers=headers)
    assert response.status_code == 201, response.content
    # (this process's sys.modules is shared with the other tests of its pytest worker: the fresh processes above
    # are what show nothing is imported)
    from opentelemetry import trace

    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    for process in probes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == ["ProxyTracerProvider", []]
    runs = WorkflowExecution.objects.all()
    assert [run.status for run in runs] == ["completed"] * 3
    assert [run.trace_id for run in runs] == [""] * 3
    assert not [span for span in receiver.spans if span.service == "chatter-off" or span.trace_id == trace_id]


def manage_chat(tmp_path, endpoint: str):
    """`manage.py chat` (a turn on the local provider, alice's) exporting its spans to `endpoint`, run to its end."""
    return launcher.run([sys.executable, "manage.py", "chat", "Hi", "--user", "alice", "--provider", "local"],
                        cwd=ROOT, timeout=120, env=server_env(
                            tmp_path, CHATTER_LOCAL_TOKEN_DELAY_MS="0", OTEL_SERVICE_NAME="chatter-command",
                            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))


def test_item_tracing_a_command_ends_without_waiting_out_a_silent_collector_and_says_its_spans_were_dropped(
        transactional_db, receiver, alice, tmp_path):
    """A command's exit waits briefly for its last spans (core.tracing.COMMAND_FLUSH_S), not for the exporter's
    retries: with a collector that takes the connection and never answers, `manage.py chat` answers its turn, then
    ends saying on standard error that its spans were dropped. With one that answers, they are exported, and it
    says nothing of them."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections are taken (the kernel's backlog) and never answered
        dropped = manage_chat(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout.strip()  # the reply
    assert dropped.stderr.splitlines()[-1] == (
        "tracing: the OTLP collector did not take this command's last spans within 2 s: they were dropped")

    exported = manage_chat(tmp_path, receiver.endpoint)
    assert exported.returncode == 0, exported.stderr
    assert "tracing:" not in exported.stderr
    assert {"create_run", "invoke_agent universal_chat"} <= {
        span.name for span in receiver.spans if span.service == "chatter-command"}


def dropped_spans(server) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "chatter_trace_spans_dropped_total")


def test_item_tracing_an_unreachable_collector_never_fails_or_slows_a_request(daphne_server, session_openai_stub,
                                                                               alice):
    """The collector takes the first export and holds it (longer than a request may wait: the client's timeout)
    before refusing it: meanwhile every turn answers (none waits for the exporter, whose one thread is held), the
    spans wait in the bounded queue and those that do not fit are dropped; the spans the collector refused are
    counted on /metrics (chatter_trace_spans_dropped_total)."""
    session_openai_stub.always(content="Hi.", usage=USAGE)
    collector = OTLPReceiver(refusing=True).start()
    server = daphne_server(**{**tracing_env(collector, session_openai_stub), "OTEL_BSP_MAX_QUEUE_SIZE": "8",
                              "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4", "OTEL_EXPORTER_OTLP_TIMEOUT": "60"})
    key = ApiTokenFactory(user=alice, scopes=["chat"]).key
    turns = 6
    try:
        with httpx.Client(timeout=30) as client:
            for turn in range(turns):
                response = client.post(f"{server.base_url}/api/v1/chat/", json={
                    "message": "Hi", "provider": "openai", "model": "gpt-4o-mini"},
                    headers={"Authorization": f"Token {key}"})
                assert response.status_code == 201, response.text
                if turn == 0:  # the first export reaches the collector, which holds it
                    deadline = time.monotonic() + 20
                    while not collector.exports and time.monotonic() < deadline:
                        time.sleep(0.02)
                    assert collector.exports == 1
        assert collector.exports == 1 and not collector.release.is_set()  # every turn answered while it held
        held = len(collector.spans)
        assert 1 <= held <= 4  # one batch

        collector.release.set()  # refused: that batch and the queued ones are counted as dropped
        metrics_spans = 0  # each /metrics request is a span too (exported after the turns' queued ones)
        deadline = time.monotonic() + 30
        while True:
            metrics_spans += 1
            counted = dropped_spans(server)
            if counted == len(collector.spans) and counted >= held + 8:
                break
            assert time.monotonic() < deadline, (counted, len(collector.spans))
            time.sleep(0.1)
    finally:
        session_openai_stub.reset()
        collector.release.set()
        stop_process(server.process)  # its last spans refused at once (not retried against a closed port)
        collector.stop()
    # Each turn makes at least 5 spans (its request, run, two nodes, its LLM call: the chat turn test above), more
    # than the held batch and the queue (8) took: the rest were dropped, never waited for.
    assert len([span for span in collector.spans if span.name.startswith("POST /api/v1/chat")]) < turns
    assert len(collector.spans) - metrics_spans <= held + 8 < 5 * turns
