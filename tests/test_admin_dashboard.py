"""The staff back-office in a real browser: headless Chromium logs in to the admin of a real daphne server, opens
the usage dashboard (figures equal to the database's, charts drawn) and a run's page with its inlines. A
screenshot of each is kept in test-artifacts/ (not committed)."""
from decimal import Decimal

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import call_command
from django.db.models import Sum
from django.test import override_settings

from tests.test_live_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, needs_chromium
from workflows.models import LLMCall, NodeExecution, WorkflowExecution
from workflows.services.runs import execution_create, execution_run

PASSWORD = "staff-password"


@pytest.fixture
def admin_url(daphne_server, staff, tmp_path) -> str:
    """A daphne server on the production settings, the staff user able to log in, static files served."""
    hasher = PBKDF2PasswordHasher()  # the server's hashers cannot check the tests' fast MD5 hash
    staff.password = hasher.encode(PASSWORD, hasher.salt())
    staff.save(update_fields=["password"])
    with override_settings(STATIC_ROOT=tmp_path / "static"):
        call_command("collectstatic", interactive=False, verbosity=0)
    server = daphne_server()
    yield server.base_url
    if server.process.poll() is not None:
        print(server.log.read_text())


def run(**kwargs) -> WorkflowExecution:
    return execution_run(execution_id=execution_create(**kwargs).pk)


@needs_chromium
@pytest.mark.django_db(transaction=True)
def test_staff_see_the_dashboard_and_a_run_with_its_inlines(admin_url, staff, alice, bob):
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
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
        outside: list[str] = []
        page.on("response", lambda response: response.status >= 400 and errors.append(f"{response.status} {response.url}"))
        page.on("request", lambda request: request.url.startswith(admin_url) or outside.append(request.url))
        try:
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
            page.screenshot(path=str(ARTIFACTS / "admin-dashboard.png"), full_page=True)

            page.goto(f"{admin_url}/admin/workflows/workflowexecution/{tools_run.pk}/change/")
            inline_rows = {group: page.locator(f"#{group}-group tr.has_original").count()
                           for group in ("node_executions", "tool_call_rows", "llm_call_rows", "messages",
                                         "events")}
            tool_text = page.locator("#tool_call_rows-group").inner_text()
            messages_text = page.locator("#messages-group").inner_text()
            page.screenshot(path=str(ARTIFACTS / "admin-execution.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "admin-dashboard-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

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
