"""The staff back-office in a real browser: headless Chromium logs in to the admin of a real daphne server, opens
the usage dashboard (figures equal to the database's, charts drawn) and a run's page with its inlines. A
test that fails leaves a screenshot of its page in test-artifacts/ (not committed)."""
from decimal import Decimal

import pytest
from django.db.models import Sum

from budgets.models import BudgetPeriod
from budgets.services import budget_create, period_start
from tests.browser import collect_errors, needs_chromium, server_password
from tests.factories import run_request
from workflows.models import LLMCall, NodeExecution, WorkflowExecution
from workflows.services.runs import execution_create, execution_run

pytest_plugins = ["tests.fixtures_browser"]
PASSWORD = "staff-password"


@pytest.fixture
def admin_url(shared_daphne_server, collected_static, staff) -> str:
    """A daphne server on the production settings (shared), the staff user able to log in, static files served."""
    staff.password = server_password(PASSWORD)
    staff.save(update_fields=["password"])
    server = shared_daphne_server()
    yield server.base_url
    if server.process.poll() is not None:
        print(server.log.read_text())


def run(**kwargs) -> WorkflowExecution:
    return execution_run(execution_id=execution_create(run_request(**kwargs)).pk)


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_staff_see_the_dashboard_and_a_run_with_its_inlines(admin_url, staff, alice, bob, new_page):
    tools_run = run(owner=alice, message="What is 12*7?", chat=True)
    run(owner=alice, message="What is 1+1?", chat=True, config={"max_total_tokens": 3})
    run(owner=bob, message="hello there", chat=True)
    expected = {
        "cost": f"${LLMCall.objects.aggregate(c=Sum('cost'))['c']:.8f}",
        "tokens": str(LLMCall.objects.aggregate(t=Sum("total_tokens"))["t"]),
        "runs": str(WorkflowExecution.objects.count()),
        "nodes": NodeExecution.objects.filter(execution=tools_run).count(),
        "events": tools_run.events.count(),
        "llm_calls": tools_run.llm_call_rows.count(),
    }
    page = new_page(viewport={"width": 1280, "height": 900})
    errors = collect_errors(page)
    outside: list[str] = []
    page.on("response", lambda response: response.status >= 400 and errors.append(f"{response.status} {response.url}"))
    page.on("request", lambda request: request.url.startswith(admin_url) or outside.append(request.url))
    page.goto(f"{admin_url}/admin/")
    page.fill("#id_username", staff.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.get_by_test_id("dashboard-link").click()
    page.wait_for_selector("[data-testid=chart-cost-by-day]")
    shown = {name: page.get_by_test_id(f"total-{name}").inner_text()
             for name in ("cost", "tokens", "executions", "llm-calls", "messages")}
    model_rows = page.get_by_test_id("model-row").count()
    model_cost = page.get_by_test_id("model-cost").first.inner_text()
    bars = {name: page.locator(f"[data-testid=chart-{name}] [data-testid=bar]").count()
            for name in ("cost-by-day", "tokens-by-day", "runs-by-day", "cost-by-model")}
    today_bar = page.locator("[data-testid=chart-cost-by-day] [data-testid=bar]").last.bounding_box()

    page.goto(f"{admin_url}/admin/workflows/workflowexecution/{tools_run.pk}/change/")
    inline_rows = {group: page.locator(f"#{group}-group tr.has_original").count()
                   for group in ("node_executions", "tool_call_rows", "llm_call_rows", "messages", "events")}
    tool_text = page.locator("#tool_call_rows-group").inner_text()
    messages_text = page.locator("#messages-group").inner_text()

    assert shown["cost"] == expected["cost"] and Decimal(expected["cost"][1:]) > 0
    assert shown["tokens"] == expected["tokens"]
    assert shown["executions"] == expected["runs"] == "3"
    assert shown["llm-calls"] == str(LLMCall.objects.count())
    assert shown["messages"] == "6"
    assert model_rows == 1 and model_cost == expected["cost"]
    assert bars == {"cost-by-day": 30, "tokens-by-day": 30, "runs-by-day": 30, "cost-by-model": 1}
    assert today_bar["height"] > 50  # all the usage is today's: the tallest bar
    assert inline_rows == {"node_executions": expected["nodes"], "tool_call_rows": 1,
                           "llm_call_rows": expected["llm_calls"], "messages": 2, "events": expected["events"]}
    assert "calculator" in tool_text and "84" in tool_text
    assert "What is 12*7?" in messages_text
    assert outside == []  # every asset came from the project's own server
    assert errors == []


def log_in(page, admin_url: str, staff) -> None:
    page.goto(f"{admin_url}/admin/login/")
    page.fill("#id_username", staff.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("[data-testid=dashboard-link]")


def boxes(page, selector: str) -> list[dict]:
    """Each element's box on the page, and its text."""
    return page.eval_on_selector_all(selector, """elements => elements.map(element => {
        const box = element.getBoundingClientRect();
        return {left: box.left, right: box.right, top: box.top, bottom: box.bottom, text: element.textContent};
    })""")


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_budget_bars_are_drawn_to_their_limit_and_named_by_their_target(admin_url, staff, alice, bob, new_page):
    spends = [  # (budget, spent): 0.1 %, 50 % and 150 % of the limit
        (budget_create(owner=staff, scope="user", target_id=str(alice.pk), period="day", timezone_name="UTC",
                       mode="hard", limit_usd=Decimal("10"), limit_tokens=None), {"spent_usd": Decimal("0.01")}),
        (budget_create(owner=staff, scope="user", target_id=str(bob.pk), period="month", timezone_name="UTC",
                       mode="soft", limit_usd=None, limit_tokens=1000), {"spent_tokens": 500}),
        (budget_create(owner=staff, scope="global", target_id="", period="total", timezone_name="UTC", mode="soft",
                       limit_usd=Decimal("2"), limit_tokens=None, name="Company"), {"spent_usd": Decimal("3")}),
    ]
    for budget, spent in spends:
        BudgetPeriod.objects.create(budget=budget, starts_at=period_start(budget), **spent)
    page = new_page(viewport={"width": 1280, "height": 900})
    log_in(page, admin_url, staff)
    page.goto(f"{admin_url}/admin/analytics/usagerollup/")
    chart = "[data-testid=chart-budgets]"
    bars = {bar["text"].split(":")[0]: bar for bar in boxes(page, f"{chart} [data-testid=bar]")}
    lines = boxes(page, f"{chart} line")
    labels = [text["text"] for text in boxes(page, f"{chart} text")]

    # Newest first: the company's, bob's, alice's. Each label names its target, never a bare id.
    assert list(bars) == ["Company (everyone, total)", "user bob (month)", "user alice (day)"], labels
    [limit_line] = lines  # the limit, 100 %, is marked
    full = limit_line["left"] - bars["user alice (day)"]["left"]  # 100 % of a limit
    widths = {label: (bar["right"] - bar["left"]) / full for label, bar in bars.items()}
    assert widths["user alice (day)"] == pytest.approx(0.001, abs=0.002)
    assert widths["user bob (month)"] == pytest.approx(0.5, abs=0.01)
    assert widths["Company (everyone, total)"] == pytest.approx(1.5, abs=0.01)


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_day_labels_sit_under_their_own_bar_only(admin_url, staff, alice, new_page):
    run(owner=alice, message="What is 12*7?", chat=True)
    page = new_page(viewport={"width": 1280, "height": 900})
    log_in(page, admin_url, staff)
    page.goto(f"{admin_url}/admin/analytics/usagerollup/")
    charts = {name: (boxes(page, f"[data-testid=chart-{name}] [data-testid=bar]"),
                     boxes(page, f"[data-testid=chart-{name}] text"))
              for name in ("cost-by-day", "tokens-by-day", "runs-by-day")}

    for name, (bars, texts) in charts.items():
        axis = max(bar["bottom"] for bar in bars)
        ticks = [text for text in texts if text["top"] >= axis]  # the day labels, under the bars
        assert len(ticks) == 8 and len(bars) == 30
        for tick in ticks:
            under = [bar for bar in bars if bar["left"] < tick["right"] - 0.5 and tick["left"] + 0.5 < bar["right"]]
            assert len(under) == 1, f"{name}: {tick['text']} lies under {len(under)} bars"
            assert under[0]["right"] - under[0]["left"] > 0


# What does not fit the window: the page itself, a table wider than the box it is drawn in, or a box that clips or
# scrolls a table sideways.
OVERFLOW = """() => {
    const page = document.scrollingElement;
    const found = page.scrollWidth > window.innerWidth ? [`page by ${page.scrollWidth - window.innerWidth} px`] : [];
    for (const table of document.querySelectorAll("table")) {
        const module = table.parentElement.closest(".module, #changelist");  // the box it is drawn in
        const past = module ? table.getBoundingClientRect().right - module.getBoundingClientRect().right : 0;
        if (past > 1) found.push(`${table.id || table.closest("[id]").id} past its box by ${Math.round(past)} px`);
        for (let box = table; box && box !== page; box = box.parentElement) {
            if (getComputedStyle(box).overflowX !== "visible" && box.scrollWidth > box.clientWidth + 1) {
                found.push(`${table.id || table.closest("[id]").id} by ${box.scrollWidth - box.clientWidth} px`);
            }
        }
    }
    return found;
}"""


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_at_1400_px_the_run_list_and_a_conversations_messages_fit_the_window(admin_url, staff, alice, new_page):
    # Long values with nowhere to break: a link, and the error of a run whose provider could not be reached.
    link = "https://docs.example.com/" + "chatter-admin-tables-" * 8
    run(owner=alice, message=f"Please read {link} and summarize it", chat=True)
    failed = run(owner=alice, message="What is 12*7?", chat=True, config={"max_total_tokens": 3})
    WorkflowExecution.objects.filter(pk=failed.pk).update(
        error_message=f"openai call to {link}v1/chat/completions failed: connection refused")
    pages = {"run list": "/admin/workflows/workflowexecution/",
             "conversation": f"/admin/conversations/conversation/{failed.conversation_id}/change/",
             "link conversation": "/admin/conversations/conversation/"
                                  f"{WorkflowExecution.objects.exclude(pk=failed.pk).get().conversation_id}/change/",
             "run": f"/admin/workflows/workflowexecution/{failed.pk}/change/",
             "messages": "/admin/conversations/message/"}
    overflow = {}
    page = new_page(viewport={"width": 1400, "height": 900})
    log_in(page, admin_url, staff)
    for name, path in pages.items():
        page.goto(f"{admin_url}{path}")
        overflow[name] = page.evaluate(OVERFLOW)

    assert overflow == {name: [] for name in pages}
