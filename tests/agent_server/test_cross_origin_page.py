"""A browser page of another origin (a static server on its own port, allowed by CHATTER_CORS_ALLOWED_ORIGINS)
drives /langgraph/ of a real daphne server with plain fetch and the SDK's x-api-key header, in headless Chromium,
as agent-chat-ui does: it streams a run of the `stateful` graph to its question, lists the graph's threads,
answers, regenerates from the checkpoint before the question and answers again. A page of an origin the setting
does not name is refused by the browser at the preflight, and nothing is written."""
import json
import re
import threading
import time
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conversations.models import Conversation
from tests.agent_server.conftest import GRAPHS, reconcile_exit_code
from tests.browser import VIEWPORT, needs_chromium
from tests.invariants import assert_all
from workflows.models import NodeExecution, WorkflowExecution

pytest_plugins = ["tests.fixtures_browser"]
pytestmark = [needs_chromium, pytest.mark.django_db(transaction=True)]

PAGE = Path(__file__).parent / "cross_origin_page"
ACCESS_LINE = re.compile(r'"([A-Z]+) (/\S*)" (\d{3})')  # daphne's access log: "POST /langgraph/threads" 200
FINISHED = "() => ['done', 'failed'].includes(document.querySelector('[data-testid=status]').textContent)"


class QuietPageHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # not on the test's output
        pass


@contextmanager
def page_origin():
    """A static HTTP server of the page on a loopback port of its own: another origin than the API's."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietPageHandler, directory=str(PAGE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def origins():
    """The page's two origins for this module's tests: the one the API allows, and another."""
    with page_origin() as allowed, page_origin() as other:
        yield allowed, other


@pytest.fixture
def allowed_origin(origins):
    return origins[0]


@pytest.fixture
def other_origin(origins):
    return origins[1]


@pytest.fixture
def cors_graph_server(shared_daphne_server, allowed_origin):
    """Daphne serving the sample graphs, CORS allowed for the page's origin only (shared by this module's tests);
    `log_start`: where this test's part of its access log begins."""
    server = shared_daphne_server(CHATTER_GRAPHS=str(GRAPHS), CHATTER_CORS_ALLOWED_ORIGINS=allowed_origin)
    server.langgraph_url = f"{server.base_url}/langgraph"
    server.log_start = server.log.stat().st_size
    return server


def requests_seen(server, *, until: tuple[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(method, path, status) of each request of this test in the server's access log, in order; with `until`, once
    the log has that request (a line is written when its answer has gone, maybe after the browser read it)."""
    deadline = time.monotonic() + 10
    while True:
        with server.log.open("rb") as log:
            log.seek(server.log_start)
            lines = ACCESS_LINE.findall(log.read().decode(errors="replace"))
        if until is None or until in [(method, path) for method, path, _ in lines] or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def node_ids(execution: WorkflowExecution) -> list[str]:
    return list(NodeExecution.objects.filter(execution=execution).order_by("index").values_list("node_id", flat=True))


def open_page(new_page, origin: str, *, server, key: str) -> tuple[dict, list[str]]:
    """The page from `origin` in Chromium (a browser context of the test's own), run to its end: what it wrote into
    its DOM, and the browser's console errors."""
    query = urlencode({"server": server.langgraph_url, "key": key, "assistant": "stateful"})
    console: list[str] = []
    page = new_page(viewport=VIEWPORT)
    page.on("pageerror", lambda exc: console.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and console.append(msg.text))
    page.goto(f"{origin}/index.html?{query}")
    page.wait_for_function(FINISHED, timeout=60_000)
    seen = json.loads(page.get_by_test_id("seen").inner_text())
    seen["status"] = page.get_by_test_id("status").inner_text()
    seen["steps"] = page.get_by_test_id("step").evaluate_all("items => items.map(i => i.dataset.step)")
    return seen, console


def test_a_page_of_an_allowed_origin_streams_answers_and_regenerates(cors_graph_server, allowed_origin, alice,
                                                                     alice_key, new_page):
    seen, console = open_page(new_page, allowed_origin, server=cors_graph_server, key=alice_key)

    assert seen["status"] == "done", seen.get("error")
    assert console == []
    thread_id = seen["thread_id"]
    # Streamed to the question, frame by frame; the run's location read from a header CORS exposes.
    streamed = seen["stream"]
    assert streamed["events"][0] == "metadata" and streamed["events"][-1] == "end"
    assert streamed["updates"] == ["greet", "use_tool", "__interrupt__"]
    assert streamed["question"] == "Go on?" and streamed["values"]["__interrupt__"][0]["value"]["value"] == "greeted"
    assert streamed["contents"] == ["Hello there", "", "found x"]
    assert streamed["location"] == f"/threads/{thread_id}/runs/{streamed['run_id']}"
    # Listed as agent-chat-ui lists a graph's threads, waiting for the answer.
    assert thread_id in seen["list"]["thread_ids"]
    assert seen["list"]["metadata"] == {"graph_id": "stateful", "assistant_id": "stateful"}
    assert seen["list"]["status"] == "interrupted"
    # Answered: the same run goes on to the end.
    answered = seen["answer"]
    assert answered["run_id"] == streamed["run_id"] and answered["events"][-1] == "end"
    assert "ask" in answered["updates"] and answered["interrupts"] == []
    assert answered["contents"] == ["Hello there", "", "found x", "You said yes", "from the subgraph"]
    # The history has every step; regenerating from the one before the question asks it again, on a new run.
    assert seen["history"]["nexts"] == [[], ["sub"], ["ask"], ["use_tool"], ["greet"], ["__start__"]]
    assert seen["history"]["before_ask_items"] == ["greeted", "tool"]
    regenerated = seen["regenerate"]
    assert regenerated["question"] == "Go on?" and regenerated["items"] == ["greeted", "tool"]
    assert regenerated["contents"] == ["Hello there", "", "found x"]
    branch_id = regenerated["location"].rsplit("/", 1)[1]
    assert regenerated["location"] == f"/threads/{thread_id}/runs/{branch_id}" and branch_id != streamed["run_id"]
    again = seen["answer_again"]
    assert again["location"] == regenerated["location"] and again["interrupts"] == []
    assert again["contents"] == ["Hello there", "", "found x", "You said no", "from the subgraph"]
    assert again["items"] == ["greeted", "tool", "asked"]
    assert seen["state"] == {"next": [], "contents": again["contents"], "status": "idle"}
    # Every call the page made was preflighted, from its origin.
    asked = requests_seen(cors_graph_server)
    called = {path for method, path, _ in asked if method != "OPTIONS"}
    assert called >= {"/langgraph/threads", "/langgraph/threads/search", f"/langgraph/threads/{thread_id}/runs/stream",
                      f"/langgraph/threads/{thread_id}/history", f"/langgraph/threads/{thread_id}/runs/wait"}
    assert {path for method, path, status in asked if method == "OPTIONS" and status == "200"} == called

    # The server's books: two runs of alice's thread (the first, and the branch from the checkpoint the page chose).
    thread = Conversation.objects.get(pk=thread_id)
    assert thread.owner == alice and thread.metadata == {"graph_id": "stateful", "assistant_id": "stateful"}
    first, branch = WorkflowExecution.objects.filter(conversation=thread).order_by("created_at")
    assert (str(first.pk), str(branch.pk)) == (streamed["run_id"], branch_id)
    assert branch.input_data["checkpoint_id"] == seen["history"]["before_ask"]
    assert [node_ids(first), node_ids(branch)] == [["greet", "use_tool", "ask", "sub"], ["ask", "sub"]]
    assert [(m.content, m.execution_id) for m in thread.messages.order_by("sequence")] == [
        ("Hello there", first.pk), ("", first.pk), ("found x", first.pk), ("You said yes", first.pk),
        ("from the subgraph", first.pk), ("You said no", branch.pk), ("from the subgraph", branch.pk)]
    for execution in (first, branch):
        assert execution.status == "completed"
        assert_all(execution)
    assert reconcile_exit_code() == 0


def test_a_page_of_an_origin_not_allowed_is_refused_at_the_preflight(cors_graph_server, other_origin, alice_key,
                                                                    new_page):
    seen, console = open_page(new_page, other_origin, server=cors_graph_server, key=alice_key)

    assert seen["status"] == "failed" and seen["steps"] == ["create"]
    assert seen["error"] == {"name": "TypeError", "message": "Failed to fetch", "step": "create"}
    assert any(f"from origin '{other_origin}' has been blocked by CORS policy" in line and "preflight" in line
               for line in console), console
    # The browser asked, was not allowed, and never sent the call: nothing was written.
    assert requests_seen(cors_graph_server, until=("OPTIONS", "/langgraph/threads")) == [
        ("OPTIONS", "/langgraph/threads", "200")]
    assert not Conversation.objects.exists() and not WorkflowExecution.objects.exists()
