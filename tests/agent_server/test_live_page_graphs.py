"""Registered Python graphs (CHATTER_GRAPHS) on the live page, in headless Chromium against a real daphne server: a
run of the calculator agent started through the official langgraph-sdk shows every message the graph produced (the
question, the AI message asking for a tool, the tool's answer, the reply) with the tokens and cost stored for each;
a run of the `stateful` graph waiting at its interrupt() shows the graph's question and goes on to its end with
the answer typed into the page."""
import json

import pytest
from langgraph_sdk import get_sync_client

from tests.agent_server.conftest import reconcile_exit_code
from tests.agent_server.test_python_graphs import EXPECTED, TURN, figures, script_turn
from tests.browser import needs_chromium, server_password
from tests.invariants import assert_all
from tests.test_live_page import logged_in_page, shown, stored
from workflows.models import WorkflowExecution

pytest_plugins = ["tests.fixtures_browser"]
pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]
COMPLETED = "() => document.querySelector('[data-testid=run-status]').textContent === 'completed'"
MESSAGES_SHOWN = "n => document.querySelectorAll('[data-testid=run-message] [data-testid=run-message-content]').length >= n"
# A run that ended before the page opened shows its saved reply once the page has fetched it, after the replay
REPLY_SHOWN = "() => document.querySelector('[data-testid=run-text]').textContent !== ''"


@pytest.fixture
def graph_page_server(collected_static, graph_server, alice):
    """The agent_server tests' shared graph server (the sample graphs, their model the fake OpenAI server), which
    serves the collected static files (collected_static, asked for first, is where the shared servers serve them
    from), and alice able to log in."""
    alice.password = server_password("alice-password")
    alice.save(update_fields=["password"])
    yield graph_server
    if graph_server.process.poll() is not None:
        print(graph_server.log.read_text())


def messages_shown(page) -> list[tuple[str, str, str]]:
    return [(line.get_by_test_id("run-message-role").inner_text(),
             line.get_by_test_id("run-message-content").inner_text() if line.get_by_test_id(
                 "run-message-content").count() else "",
             line.get_by_test_id("run-message-usage").inner_text())
            for line in page.get_by_test_id("run-message").all()]


def messages_stored(execution) -> list[tuple[str, str, str]]:
    lines = []
    for m in execution.conversation.messages.filter(execution=execution).order_by("sequence"):
        calls = " ".join(f"→ {c['name']}({c['arguments']})" for c in m.tool_calls or [])
        lines.append((m.role, " ".join(part for part in (m.content, calls) if part),
                      f"{m.total_tokens} tokens · ${m.cost:.8f}"))
    return lines


def test_a_graphs_run_shows_every_message_it_produced_with_its_usage(graph_page_server, openai_stub, alice_key, new_page):
    client = get_sync_client(url=graph_page_server.langgraph_url, api_key=alice_key)
    script_turn(openai_stub)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "calculator_agent", input=TURN)
    execution = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])

    with logged_in_page(new_page, graph_page_server.base_url) as (page, errors):
        page.locator(f'[data-testid=run-item][data-execution-id="{execution.pk}"]').click()
        page.wait_for_function(COMPLETED, timeout=30_000)
        page.wait_for_function(MESSAGES_SHOWN, arg=3, timeout=15_000)
        page.wait_for_function(REPLY_SHOWN, timeout=15_000)
        on_page, counters, text = messages_shown(page), shown(page), page.get_by_test_id("run-text").inner_text()
        listed = page.locator(f'[data-testid=run-item][data-execution-id="{execution.pk}"]').inner_text()

    assert figures(execution) == EXPECTED
    assert "What is 12*7?" in listed and "openai/gpt-4o-mini" in listed and "146 tokens · $0.00002910" in listed
    assert [role for role, _, _ in on_page] == ["user", "assistant", "tool", "assistant"]
    assert on_page == messages_stored(execution)
    assert "multiply" in on_page[1][1] and on_page[2][1] == "84" and on_page[3][1] == "12*7 = 84"
    assert [usage for _, _, usage in on_page][1:] == ["60 tokens · $0.00001350", "0 tokens · $0.00000000",
                                                     "86 tokens · $0.00001560"]
    assert counters == stored(execution) and text == "12*7 = 84"
    assert errors == []
    assert_all(execution)
    assert reconcile_exit_code() == 0


def test_a_graph_waiting_at_its_interrupt_is_answered_on_the_page(graph_page_server, alice_key, new_page):
    client = get_sync_client(url=graph_page_server.langgraph_url, api_key=alice_key)
    thread = client.threads.create()
    client.runs.wait(thread["thread_id"], "stateful", input={"messages": [], "value": "init", "items": []})
    paused = WorkflowExecution.objects.get(conversation_id=thread["thread_id"])
    assert paused.status == "waiting"

    with logged_in_page(new_page, graph_page_server.base_url) as (page, errors):
        page.locator(f'[data-testid=run-item][data-execution-id="{paused.pk}"]').click()
        page.get_by_test_id("answer-form").wait_for(state="visible", timeout=15_000)
        prompt = page.get_by_test_id("answer-prompt").inner_text()
        page.get_by_test_id("answer-input").fill("yes")
        page.get_by_test_id("answer-submit").click()
        page.wait_for_function(COMPLETED, timeout=30_000)
        page.wait_for_function(MESSAGES_SHOWN, arg=5, timeout=15_000)
        on_page = messages_shown(page)

    execution = WorkflowExecution.objects.get(pk=paused.pk)
    assert json.loads(prompt) == {"question": "Go on?", "value": "greeted"}  # (PostgreSQL's jsonb orders its keys)
    assert execution.status == "completed"
    assert client.threads.get_state(thread["thread_id"])["values"]["items"] == ["greeted", "tool", "asked"]
    assert on_page == messages_stored(execution)
    assert [content for _, content, _ in on_page] == [
        "Hello there", "→ lookup({\"q\": \"x\"})", "found x", "You said yes", "from the subgraph"]
    assert errors == []
    assert_all(execution)
