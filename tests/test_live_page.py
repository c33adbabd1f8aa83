"""The live page (docs/usage.md#the-live-page): login, then a chat turn streamed into the page, the same run replayed
over the websocket, and a dropped stream recovered, in headless Chromium against a real daphne server."""
import re
from contextlib import contextmanager
from decimal import Decimal
from itertools import pairwise

import pytest

from tests.browser import VIEWPORT, collect_errors, needs_chromium, server_password
from workflows.models import NodeExecution, WorkflowExecution
from workflows.services.run_requests import ExecutionRequest

pytest_plugins = ["tests.fixtures_browser"]
TERMINAL_STATUSES = ("completed", "failed", "cancelled", "error")

# Records every change of the streamed text with the run status at that moment, so the test can tell that
# the text grew while the run was still going (sampling from Python could miss a fast stream).
RECORD_TEXT = """() => {
    window.textSamples = [];
    const text = document.querySelector('[data-testid=run-text]');
    const status = document.querySelector('[data-testid=run-status]');
    new MutationObserver(() => window.textSamples.push([text.textContent, status.textContent]))
        .observe(text, {childList: true, characterData: true, subtree: true});
}"""
# Records every change of the counters with the run status and whether they were shown as an estimate.
RECORD_COUNTERS = """() => {
    window.counterSamples = [];
    const counters = document.querySelector('[data-testid=counters]');
    const value = (name) => document.querySelector(`[data-testid=${name}]`).textContent;
    new MutationObserver(() => window.counterSamples.push({
        total: Number(value('total-tokens')), cost: value('cost'), status: value('run-status'),
        estimated: counters.classList.contains('estimated')}))
        .observe(counters, {childList: true, characterData: true, subtree: true, attributes: true});
}"""
# Counts the reads of the page's streamed answer that carried tokens and no usage yet: a read that brings many
# tokens at once (a starved browser or server under load) shows their sum as one change of the counters.
RECORD_TOKEN_READS = """() => {
    window.tokenReads = 0;
    const read = ReadableStreamDefaultReader.prototype.read;
    ReadableStreamDefaultReader.prototype.read = async function () {
        const result = await read.call(this);
        const text = result.value ? new TextDecoder().decode(result.value) : "";
        if (/"event":\\s*"token"/.test(text) && !/"event":\\s*"token_usage"/.test(text)) window.tokenReads += 1;
        return result;
    };
}"""


def test_it_sends_anonymous_users_to_the_login_page(client):
    response = client.get("/live/")
    assert response.status_code == 302
    assert response["Location"] == "/live/login/?next=/live/"


def test_it_logs_in_back_to_the_live_page(client, alice):
    response = client.post("/live/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert response["Location"] == "/live/"
    page = client.get("/live/")
    assert page.status_code == 200
    assert b'data-testid="total-tokens"' in page.content
    assert "csrftoken" in page.cookies


def provider_options(client) -> list[str]:
    return re.findall(r'<option value="([^"]*)"', client.get("/live/").content.decode())


def test_it_offers_only_the_providers_that_are_configured(client, alice, settings):
    client.force_login(alice)
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = settings.ANTHROPIC_API_KEY = ""
    assert provider_options(client) == ["", "local"]
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # a local OpenAI-compatible server
    assert provider_options(client) == ["", "local", "openai"]


def test_it_logs_out(client, alice):
    client.force_login(alice)
    response = client.post("/live/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/live/login/"
    assert client.get("/live/").status_code == 302


# --- in a browser ------------------------------------------------------------------------------------------
@pytest.fixture
def live_server_url(shared_daphne_server, collected_static, alice) -> str:
    """A daphne server on the production settings (shared by these tests), with alice able to log in and the
    static files served."""
    alice.password = server_password("alice-password")  # whitenoise serves collected files only
    alice.save(update_fields=["password"])
    # A word every 80 ms: on a loaded machine (load 10) the page's reads at 30 ms brought a reply's few tokens only
    # with its end
    server = shared_daphne_server(CHATTER_LOCAL_TOKEN_DELAY_MS="80")
    yield server.base_url
    if server.process.poll() is not None:
        print(server.log.read_text())


@contextmanager
def logged_in_page(new_page, base_url: str):
    """A Chromium page (of the `new_page` fixture: a browser context of the test's own) logged in as alice through
    the login form; `errors` collects script errors."""
    page = new_page(viewport=VIEWPORT)
    errors = collect_errors(page)
    page.goto(f"{base_url}/live/")
    assert page.url == f"{base_url}/live/login/?next=/live/"
    page.get_by_test_id("login-username").fill("alice")
    page.get_by_test_id("login-password").fill("alice-password")
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{base_url}/live/")
    yield page, errors


def send(page, message: str) -> None:
    page.get_by_test_id("chat-message").fill(message)
    page.get_by_test_id("chat-submit").click()


def wait_until_finished(page) -> None:
    page.wait_for_function(
        "statuses => statuses.includes(document.querySelector('[data-testid=run-status]').textContent)",
        arg=list(TERMINAL_STATUSES), timeout=30_000)
    page.wait_for_function("() => document.querySelector('[data-testid=run-text]').textContent.includes('84')")


def shown(page) -> dict:
    return {
        **{name: page.get_by_test_id(name).inner_text()
           for name in ("prompt-tokens", "completion-tokens", "total-tokens", "cost", "run-status", "run-id")},
        "nodes": page.get_by_test_id("node").count(),
        "error": page.get_by_test_id("error").inner_text(),
    }


def stored(execution: WorkflowExecution) -> dict:
    return {
        "prompt-tokens": str(execution.prompt_tokens),
        "completion-tokens": str(execution.completion_tokens),
        "total-tokens": str(execution.total_tokens),
        "cost": f"${execution.cost:.8f}",
        "run-status": execution.status,
        "run-id": str(execution.pk),
        "nodes": NodeExecution.objects.filter(execution=execution).count(),
        "error": "",
    }


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_it_streams_a_chat_turn_and_replays_it(live_server_url, new_page):
    with logged_in_page(new_page, live_server_url) as (page, errors):
        page.evaluate(RECORD_TEXT)
        send(page, "What is 12*7?")
        wait_until_finished(page)
        streamed = shown(page)
        streamed_text = page.get_by_test_id("run-text").inner_text()
        samples = page.evaluate("window.textSamples")

        # A fresh page: pick the run from the list and watch it replayed over the websocket.
        page.goto(f"{live_server_url}/live/")
        page.locator(f'[data-testid=run-item][data-execution-id="{streamed["run-id"]}"]').click()
        wait_until_finished(page)
        replayed = shown(page)
        replayed_text = page.get_by_test_id("run-text").inner_text()

    execution = WorkflowExecution.objects.get()
    assert execution.status == "completed" and execution.total_tokens > 0 and execution.cost > 0
    assert streamed == stored(execution)
    assert replayed == stored(execution)
    assert "84" in streamed_text and replayed_text == streamed_text == execution.output_data["content"]
    # The text grew token by token while the run was still running: part of the reply was shown before its end, each
    # text the one before with more (a loaded host's server may send several tokens in one write, which the page
    # shows at once).
    while_running = [text for text, status in samples if text and status not in TERMINAL_STATUSES]
    assert any(text != streamed_text for text in while_running), samples
    assert all(later.startswith(earlier) for earlier, later in pairwise(while_running + [streamed_text])), samples
    assert errors == []


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_it_recovers_a_dropped_stream_over_the_websocket(live_server_url, new_page):
    """The chat response is cut after its first tokens: the page goes on over the websocket from the last
    seq it saw, without a repeated node line or counter, and shows the saved reply in full."""

    def cut_after_first_tokens(route):
        response = route.fetch()
        frames = response.text().split("\n\n")
        first_token = next(i for i, frame in enumerate(frames) if "event: token" in frame)
        route.fulfill(response=response, body="\n\n".join(frames[: first_token + 2]) + "\n\n")

    with logged_in_page(new_page, live_server_url) as (page, errors):
        page.route("**/api/v1/chat/", cut_after_first_tokens)
        sockets: list[str] = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        send(page, "What is 12*7?")
        wait_until_finished(page)
        recovered = shown(page)
        text = page.get_by_test_id("run-text").inner_text()

    execution = WorkflowExecution.objects.get()
    # The page's own feed (/ws/events/, for the ingestion panel) opens at page load, and again after a drop: it is
    # recorded or not depending on when that happened. What matters is the run's socket.
    run_sockets = [url for url in sockets if "/ws/executions/" in url]
    assert {url.split("/ws/", 1)[1] for url in sockets if url not in run_sockets} <= {"events/"}, sockets
    assert run_sockets and all(f"/ws/executions/{execution.pk}/?after=" in url for url in run_sockets), sockets
    assert int(run_sockets[0].rsplit("=", 1)[1]) > 0  # resumed from the last seq the stream had delivered
    assert recovered == stored(execution)
    assert text == execution.output_data["content"] and "84" in text
    assert errors == []


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_it_shows_the_question_the_runs_titles_and_counts_tokens_as_they_stream(live_server_url, new_page):
    question = "What is 12*7?"
    with logged_in_page(new_page, live_server_url) as (page, errors):
        page.evaluate(RECORD_COUNTERS)
        page.evaluate(RECORD_TOKEN_READS)
        send(page, question)
        wait_until_finished(page)
        samples, token_reads = page.evaluate("[window.counterSamples, window.tokenReads]")
        asked = page.get_by_test_id("run-question")
        asked_text, asked_box = asked.inner_text(), asked.bounding_box()
        answer_box = page.get_by_test_id("run-text").bounding_box()
        estimated_at_end = page.get_by_test_id("counters").get_attribute("class")
        finished = shown(page)

        # The page fetches a model's price once, when its first run starts: on a loaded host it can come after
        # that run's tokens. A second run of the same model on the same page has it from its first token.
        page.evaluate("() => { window.counterSamples = []; window.tokenReads = 0; }")
        send(page, "What is 12*7 again?")
        page.wait_for_function("id => document.querySelector('[data-testid=run-id]').textContent !== id",
                               arg=finished["run-id"])
        wait_until_finished(page)
        priced_samples, priced_reads = page.evaluate("[window.counterSamples, window.tokenReads]")
        second = shown(page)

        page.goto(f"{live_server_url}/live/")
        item = page.locator(f'[data-testid=run-item][data-execution-id="{finished["run-id"]}"]')
        title = item.get_by_test_id("run-title").inner_text()
        item.click()
        page.wait_for_function("q => document.querySelector('[data-testid=run-question]').textContent === q",
                               arg=question)
        wide = page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")

    execution = WorkflowExecution.objects.get(pk=finished["run-id"])
    assert asked_text == question and title == question
    assert asked_box["y"] + asked_box["height"] <= answer_box["y"]  # the question sits above the answer
    # The counters moved with the tokens, while the run was running, shown as an estimate (one change for each
    # read that brought tokens: tokens that arrive together show as one step)...
    estimated = [s for s in samples if s["status"] not in TERMINAL_STATUSES and s["estimated"]]
    assert token_reads >= 1 and len({s["total"] for s in estimated}) >= min(3, token_reads), (token_reads, samples)
    assert all(earlier["total"] <= later["total"] for earlier, later in pairwise(estimated)), samples
    # ...and so did the cost, once the page had the model's price: each read that brought tokens raised it.
    priced = [s for s in priced_samples if s["status"] not in TERMINAL_STATUSES and s["estimated"]]
    assert priced_reads >= 1 and len({s["cost"] for s in priced}) >= min(2, priced_reads), (priced_reads, priced)
    assert all(cost(earlier) <= cost(later) for earlier, later in pairwise(priced)), priced
    # ...and end on the exact stored figures.
    assert finished == stored(execution) and "estimated" not in estimated_at_end
    assert second == stored(WorkflowExecution.objects.get(pk=second["run-id"]))
    assert wide  # nothing wider than a 1366 px window
    assert errors == []


def cost(sample: dict) -> Decimal:
    return Decimal(sample["cost"].removeprefix("$"))


@needs_chromium
def test_the_admins_runs_list_shows_tokens_and_cost_without_scrolling_at_1366_px(live_server_url, alice, new_page):
    """A staff user's runs list in the admin, in Chromium at 1366×768: no horizontal scroll, and the tokens and
    cost of a run are on screen."""
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    with logged_in_page(new_page, live_server_url) as (page, errors):
        send(page, "What is 12*7?")
        wait_until_finished(page)
        page.goto(f"{live_server_url}/admin/workflows/workflowexecution/")
        layout = page.evaluate("""() => {
            const box = (selector) => { const r = document.querySelector(selector).getBoundingClientRect();
                                         return [r.left, r.right]; };
            return {scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                    tokens: box("td.field-total_tokens"), cost: box("td.field-cost"),
                    tokens_text: document.querySelector("td.field-total_tokens").textContent.trim(),
                    cost_text: document.querySelector("td.field-cost").textContent.trim()};
        }""")
        assert not errors, errors
    assert layout["scroll"] <= layout["width"] == VIEWPORT["width"], layout
    for column in ("tokens", "cost"):
        left, right = layout[column]
        assert 0 <= left < right <= VIEWPORT["width"], (column, layout)
    run = WorkflowExecution.objects.get(owner=alice)
    assert layout["tokens_text"] == str(run.total_tokens) and run.total_tokens > 0
    assert layout["cost_text"].replace("$", "") in (str(run.cost), f"{run.cost:.8f}"), layout


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_it_asks_the_question_of_a_waiting_run_and_sends_the_answer(live_server_url, alice, new_page):
    """A run paused at a human_input node: the page shows its question with an answer box; an answer its schema
    refuses is shown as the server's error and the box stays; a good one goes on with the run to its end."""
    from tests.api.test_human_input import ASKING
    from workflows.services.runs import execution_run_now

    paused = execution_run_now(ExecutionRequest(owner=alice, graph=ASKING, message="hello"))
    assert paused.status == "waiting"
    with logged_in_page(new_page, live_server_url) as (page, errors):
        page.locator(f'[data-testid=run-item][data-execution-id="{paused.pk}"]').click()
        page.get_by_test_id("answer-form").wait_for(state="visible", timeout=15_000)
        prompt = page.get_by_test_id("answer-prompt").inner_text()
        status_waiting = page.get_by_test_id("run-status").inner_text()

        page.get_by_test_id("answer-input").fill("eleven")
        page.get_by_test_id("answer-submit").click()
        page.wait_for_function("() => document.querySelector('[data-testid=error]').textContent.includes('answer')")
        refused = page.get_by_test_id("error").inner_text()
        still_asking = page.get_by_test_id("answer-form").is_visible()

        page.get_by_test_id("answer-input").fill("3")
        page.get_by_test_id("answer-submit").click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=run-status]').textContent === 'completed'", timeout=30_000)
        answered = {**shown(page), "asking": page.get_by_test_id("answer-form").is_visible()}

    execution = WorkflowExecution.objects.get(pk=paused.pk)
    assert (prompt, status_waiting) == ("How many?", "waiting")
    assert "answer" in refused and still_asking
    assert execution.status == "completed" and execution.output_data["variables"] == {"count": 3}
    assert answered == {**stored(execution), "asking": False}
    # The browser logs the refused answer's response itself; nothing else went wrong.
    assert [e for e in errors if "status of 400" not in e] == [] and len(errors) == 1


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_item_23_the_live_page_prints_no_literal_null(live_server_url, new_page):
    """A message line without content or thumbs (the user's) once showed the text "null" (replaceChildren(…, null))."""
    with logged_in_page(new_page, live_server_url) as (page, errors):
        send(page, "What is 12*7?")
        wait_until_finished(page)
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=run-message-role]')]"
                               ".map((role) => role.textContent).includes('user')")
        lines = page.get_by_test_id("run-message").all_text_contents()
        text = page.evaluate("() => document.body.textContent")

    assert any(line.startswith("user") for line in lines) and any(line.startswith("assistant") for line in lines)
    assert not any("null" in line for line in lines), lines  # e.g. "0 tokens · $0.00000000null"
    assert "null" not in text
    assert errors == []
