"""JSON workflows calling MCP tools (issue 44): the run config's `allowed_tools` names them (`<server>__<tool>`,
`<server>__*`); the model is bound with those its owner may call, and the tools node calls them through
tools.services.mcp_tool_run against the real MCP server, each call a ToolCall row with `tool_start` /
`tool_called` events. A call outside the allow-list, a timeout, a server that is down, an oversized result and
an MCP error each end as a tool message the model sees, and the run goes on."""
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from tools.services import mcp_server_create
from workflows.models import ExecutionEvent, ToolCall
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import execution_create, execution_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]

OPENAI = {"provider": "openai", "model": "gpt-4o-mini"}


@pytest.fixture
def tracker(alice, mcp_server):
    return mcp_server_create(owner=alice, name="tracker", url=mcp_server.url)


def chat(owner, allowed_tools, message="What is 2 + 40?"):
    execution = execution_create(ChatRequest(owner=owner, message=message,
                                             config={**OPENAI, "allowed_tools": allowed_tools}))
    return execution_run(execution_id=execution.pk)


def chat_started(owner, allowed_tools, message="Wait."):
    """A chat run started on a thread of its own: its execution, and an Event set once the run has ended."""
    execution = execution_create(ChatRequest(owner=owner, message=message,
                                             config={**OPENAI, "allowed_tools": allowed_tools}))
    ended = threading.Event()

    def run():
        try:
            execution_run(execution_id=execution.pk)
        finally:
            connection.close()
            ended.set()

    threading.Thread(target=run, daemon=True).start()
    return execution, ended


def bound(request) -> dict[str, dict]:
    """The tools a model request offered, by name: their parameters."""
    return {tool["function"]["name"]: tool["function"]["parameters"] for tool in request.body.get("tools", [])}


def tool_messages(request) -> list[dict]:
    return [message for message in request.body["messages"] if message["role"] == "tool"]


def text_of(message: dict) -> str:
    """A message's text, whether sent as a string or as content blocks (langchain-mcp-adapters' tools give blocks)."""
    content = message["content"]
    return content if isinstance(content, str) else "".join(block["text"] for block in content)


def test_item_01_a_json_workflow_calls_an_allowed_mcp_tool(alice, tracker, mcp_server, openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}}])
    openai_server.reply(content="2 + 40 is 42.")

    execution = chat(alice, ["calculator", "tracker__*"])

    assert execution.status == "completed"
    offered = bound(openai_server.requests[0])
    assert set(offered) == {"calculator", *(f"tracker__{name}" for name in
                                            ("add", "sleep", "fail", "big", "echo_header"))}
    assert set(offered["tracker__add"]["properties"]) == {"a", "b"}  # its JSON input schema, as the server gave it
    assert mcp_server.calls == [("add", {"a": 2, "b": 40})]
    [answer] = tool_messages(openai_server.requests[1])
    assert answer["content"] == "42.0"
    assert execution.tool_calls == 1


def test_item_01_only_the_named_tools_are_bound_and_others_refused(alice, tracker, mcp_server, openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__fail", "arguments": {"message": "boom"}}])
    openai_server.reply(content="I may not.")

    execution = chat(alice, ["tracker__add"])

    assert execution.status == "completed"
    assert set(bound(openai_server.requests[0])) == {"tracker__add"}
    assert mcp_server.calls == []  # nothing called
    [answer] = tool_messages(openai_server.requests[1])
    assert answer["content"] == "Error: tool 'tracker__fail' is not allowed in this run"
    assert ExecutionEvent.objects.filter(execution=execution, event="limit_exceeded",
                                         data__value="tracker__fail").exists()


def test_item_01_another_users_server_is_neither_bound_nor_called(bob, tracker, mcp_server, openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 1}}])
    openai_server.reply(content="No such tool.")

    execution = chat(bob, ["calculator", "tracker__*"])

    assert execution.status == "completed"
    assert set(bound(openai_server.requests[0])) == {"calculator"}
    assert mcp_server.calls == []
    [answer] = tool_messages(openai_server.requests[1])
    assert answer["content"] == "Error: there is no MCP server 'tracker'"


def test_item_01_a_shared_server_is_called_for_every_user(staff, bob, mcp_server, openai_server):
    mcp_server_create(owner=staff, name="docs", url=mcp_server.url, shared=True)
    openai_server.reply(tool_calls=[{"name": "docs__add", "arguments": {"a": 1, "b": 2}}])
    openai_server.reply(content="3.")

    execution = chat(bob, ["docs__add"])

    assert execution.status == "completed"
    assert mcp_server.calls == [("add", {"a": 1, "b": 2})]
    assert tool_messages(openai_server.requests[1])[0]["content"] == "3.0"


def _slow(settings, mcp_server, tracker):
    settings.CHATTER_MCP_TIMEOUT_S = 1
    return "tracker__sleep", {"seconds": 5}, "no answer within 1 s"


def _down(settings, mcp_server, tracker):
    type(tracker).objects.filter(pk=tracker.pk).update(url=mcp_server.url.replace(str(mcp_server.port), "1"))
    return "tracker__add", {"a": 1, "b": 2}, "could not be asked"


def _oversized(settings, mcp_server, tracker):
    settings.CHATTER_MCP_MAX_RESULT_BYTES = 1000
    return "tracker__big", {"size": 5000}, "[truncated: the result was 5000 bytes, only the first 1000 are kept]"


def _mcp_error(settings, mcp_server, tracker):
    return "tracker__fail", {"message": "no such issue"}, "no such issue"


@pytest.mark.parametrize("fault", [_slow, _down, _oversized, _mcp_error],
                         ids=["timeout", "server_down", "oversized_result", "mcp_error"])
def test_item_01_a_fault_is_a_tool_message_and_the_run_goes_on(alice, tracker, mcp_server, openai_server, settings,
                                                               fault):
    name, arguments, said = fault(settings, mcp_server, tracker)
    openai_server.reply(tool_calls=[{"name": name, "arguments": arguments}])
    openai_server.reply(content="Recovered.")

    execution = chat(alice, ["tracker__*"])

    assert execution.status == "completed" and execution.output_data["content"] == "Recovered."
    [answer] = tool_messages(openai_server.requests[1])
    assert said in answer["content"]
    row = ToolCall.objects.get(execution=execution)
    assert row.tool == name and row.server_id == tracker.pk
    assert row.ok is (fault is _oversized)


def test_item_02_each_call_is_a_tool_call_row_with_tool_start_and_tool_called_events(
        alice, staff, tracker, mcp_server, openai_server, client):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}, "id": "call_add"},
                                    {"name": "tracker__fail", "arguments": {"message": "no such issue"}}])
    openai_server.reply(content="Done.")

    execution = chat(alice, ["tracker__*"])

    added, failed = ToolCall.objects.filter(execution=execution).order_by("id")
    assert (added.node_id, added.tool, added.server_id, added.arguments, added.result, added.ok, added.error) == (
        "tools", "tracker__add", tracker.pk, {"a": 2, "b": 40}, "42.0", True, "")
    assert (failed.tool, failed.server_id, failed.ok, failed.result) == ("tracker__fail", tracker.pk, False, "")
    assert "no such issue" in failed.error
    assert added.duration_ms >= 0 and failed.duration_ms >= 0
    events = [(event.event, event.data) for event in ExecutionEvent.objects.filter(execution=execution)
              .filter(event__in=("tool_start", "tool_called")).order_by("seq")]
    assert [(name, data["tool"]) for name, data in events] == [
        ("tool_start", "tracker__add"), ("tool_called", "tracker__add"),
        ("tool_start", "tracker__fail"), ("tool_called", "tracker__fail")]
    assert events[0][1]["call_id"] == "call_add" and events[3][1]["ok"] is False
    execution.refresh_from_db()
    assert execution.tool_calls == 2

    client.force_login(staff)
    page = client.get(reverse("admin:workflows_toolcall_changelist")).content.decode()
    assert "tracker__add" in page and "tracker__fail" in page and str(tracker) in page
    inline = client.get(reverse("admin:workflows_workflowexecution_change", args=[execution.pk])).content.decode()
    assert "tracker__add" in inline and str(tracker) in inline


def run_agent(owner, settings, monkeypatch, openai_server, attribute="graph"):
    settings.CHATTER_GRAPHS = {"mcp_agent": (str(Path(__file__).parent / "graphs" / "mcp_agent.py"), attribute)}
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    graph = {"nodes": [{"id": "start", "type": "start"},
                       {"id": "agent", "type": "python_graph", "config": {"graph": "mcp_agent"}},
                       {"id": "end", "type": "end"}],
             "edges": [{"source": "start", "target": "agent"}, {"source": "agent", "target": "end"}]}
    execution = execution_create(ExecutionRequest(owner=owner, graph=graph, message="What is 2 + 40?"))
    return execution_run(execution_id=execution.pk)


def test_item_03_a_registered_react_agent_calls_its_owners_mcp_tool(alice, tracker, mcp_server, openai_server,
                                                                    settings, monkeypatch):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}}],
                        usage={"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60})
    openai_server.reply(tool_calls=[{"name": "tracker__fail", "arguments": {"message": "no such issue"}}],
                        usage={"prompt_tokens": 60, "completion_tokens": 10, "total_tokens": 70})
    openai_server.reply(content="2 + 40 is 42.", usage={"prompt_tokens": 80, "completion_tokens": 6,
                                                        "total_tokens": 86})

    execution = run_agent(alice, settings, monkeypatch, openai_server)

    assert execution.status == "completed", execution.error_message
    assert set(bound(openai_server.requests[0])) == {"tracker__add", "tracker__fail"}  # the allowed ones only
    assert set(bound(openai_server.requests[0])["tracker__add"]["properties"]) == {"a", "b"}
    assert mcp_server.calls == [("add", {"a": 2, "b": 40}), ("fail", {"message": "no such issue"})]
    assert text_of(tool_messages(openai_server.requests[1])[-1]) == "42.0"
    assert "no such issue" in text_of(tool_messages(openai_server.requests[2])[-1])  # an error the model sees
    added, failed = ToolCall.objects.filter(execution=execution).order_by("id")
    assert (added.tool, added.server_id, added.ok, added.result) == ("tracker__add", tracker.pk, True, "42.0")
    assert (failed.tool, failed.server_id, failed.ok) == ("tracker__fail", tracker.pk, False)
    assert "no such issue" in failed.error
    assert execution.tool_calls == 2 and execution.llm_calls == 3
    events = ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("event", "data")
    assert [(event, data["tool"]) for event, data in events if event.startswith("tool_")] == [
        ("tool_start", "tracker__add"), ("tool_called", "tracker__add"),
        ("tool_start", "tracker__fail"), ("tool_called", "tracker__fail")]


def test_item_03_another_users_agent_gets_none_of_alices_tools(bob, tracker, mcp_server, openai_server, settings,
                                                               monkeypatch):
    openai_server.reply(content="I have no tools.")

    execution = run_agent(bob, settings, monkeypatch, openai_server)

    assert execution.status == "completed", execution.error_message
    assert bound(openai_server.requests[0]) == {}
    assert mcp_server.calls == []


@pytest.mark.parametrize("fault", [_slow, _down, _oversized], ids=["timeout", "server_down", "oversized_result"])
def test_item_03_a_fault_in_an_agents_mcp_tool_is_a_tool_message(alice, tracker, mcp_server, openai_server, settings,
                                                                   monkeypatch, fault):
    name, arguments, said = fault(settings, mcp_server, tracker)
    openai_server.reply(tool_calls=[{"name": name, "arguments": arguments}])
    openai_server.reply(content="Recovered.")

    execution = run_agent(alice, settings, monkeypatch, openai_server, attribute="any_tool_graph")

    assert execution.status == "completed", execution.error_message
    assert said in text_of(tool_messages(openai_server.requests[1])[-1])
    row = ToolCall.objects.get(execution=execution)
    assert row.tool == name and row.server_id == tracker.pk and row.ok is (fault is _oversized)


def test_scope_an_agents_call_that_finds_its_tool_gone_refreshes_the_servers_tools(
        alice, tracker, mcp_server, openai_server, settings, monkeypatch):
    from tools.models import McpServer

    McpServer.objects.filter(pk=tracker.pk).update(tools=[*tracker.tools, {
        "name": "vanished", "description": "Listed once.", "input_schema": {"type": "object"}}])
    openai_server.reply(tool_calls=[{"name": "tracker__vanished", "arguments": {}}])
    openai_server.reply(content="It is gone.")

    execution = run_agent(alice, settings, monkeypatch, openai_server, attribute="any_tool_graph")

    assert execution.status == "completed", execution.error_message
    assert "tracker__vanished" in bound(openai_server.requests[0])
    said = text_of(tool_messages(openai_server.requests[1])[-1])
    assert said.startswith("the MCP server 'tracker' no longer offers the tool 'vanished'"), said
    assert "vanished" not in {tool["name"] for tool in McpServer.objects.get(pk=tracker.pk).tools}


def test_item_02_tool_start_is_written_before_the_mcp_server_answers(alice, tracker, mcp_server, openai_server):
    """Watchers see an MCP call begin while the server works (the run writes what it holds before it waits)."""
    import time

    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}},
                                    {"name": "tracker__sleep", "arguments": {"seconds": 4}}])
    openai_server.reply(content="Slept.")
    execution, ended = chat_started(alice, ["tracker__*"])
    deadline = time.monotonic() + 30
    while len(mcp_server.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mcp_server.calls == [("add", {"a": 1, "b": 2}), ("sleep", {"seconds": 4})]
    seen = ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("event", "data")
    assert [(event, data["tool"]) for event, data in seen if event.startswith("tool_")] == [
        ("tool_start", "tracker__add"), ("tool_called", "tracker__add"), ("tool_start", "tracker__sleep")]
    assert not ended.is_set()  # the server is still working
    assert ended.wait(30)
    assert ExecutionEvent.objects.filter(execution=execution, event="tool_called").count() == 2


# A name no model takes (a dot, over 64 characters) is never offered, so no allow-list names it.
@pytest.mark.parametrize("entry", ["tracker__", "__add", "tracker_", "a b__add", "tracker__a b", "tracker__**", 7,
                                   "my-docs__search.v2", "tracker__" + "x" * 56])
def test_item_01_an_allow_list_entry_that_names_no_tool_is_refused(entry):
    from core.errors import InvalidInput
    from engine.config import config_resolve

    assert config_resolve({"allowed_tools": ["calculator", "tracker__add", "tracker__*", "my-docs___search-v2",
                                             "tracker__" + "x" * 55]})
    with pytest.raises(InvalidInput) as refused:
        config_resolve({"allowed_tools": ["tracker__*", entry]})
    assert [(e["path"], e["code"]) for e in refused.value.details] == [("config.allowed_tools", "invalid_choice")]
