"""Issue 44, priced tools (item 05 of this suite): a server or a single tool carries a price per call, dated in the
model price table (analytics.ModelPrice rows of provider "mcp", `per_call`, the pattern over `<server>__<tool>`).
Each call that answered is charged: its ToolCall row, its node, the run (and so the reply, the conversation and
the budgets), the owner's usage rollups (provider "mcp", the tool as the model), with the invariants and
`reconcile_aggregates` holding; a run whose hard budget cannot cover a priced call does not make it (the model
gets a refusal). Against the real MCP server and the OpenAI stub, prices set through the public API."""
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import UsageRollup
from budgets.services import budget_create
from tests.invariants import assert_all
from tests.tools.test_workflow_tools import chat, run_agent, text_of, tool_messages
from tools.services import mcp_server_create
from workflows.models import ExecutionEvent, NodeExecution, ToolCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed", "clear_of_midnight")]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
LLM_COST = Decimal("0.00021")  # gpt-4o-mini's seeded price: 1000 × 0.15/M + 100 × 0.60/M


def staff_api(staff) -> APIClient:
    client = APIClient()
    client.force_login(staff)
    return client


@pytest.fixture
def tracker(alice, mcp_server):
    return mcp_server_create(owner=alice, name="tracker", url=mcp_server.url)


@pytest.fixture
def prices(staff):
    """Through the API, as staff: the whole server at 0.01 a call from an hour ago; `add` at 0.05 from an hour on
    (not yet in force)."""
    client = staff_api(staff)
    now = timezone.now()
    for body in ({"provider": "mcp", "model_pattern": "tracker__.*", "per_call": "0.01",
                  "effective_from": (now - timedelta(hours=1)).isoformat()},
                 {"provider": "mcp", "model_pattern": "tracker__add", "per_call": "0.05",
                  "effective_from": (now + timedelta(hours=1)).isoformat()}):
        response = client.post("/api/v1/pricing/", body, format="json")
        assert response.status_code == 201, response.content
    return client


def assert_tool_analytics(alice, bob, tracker, execution):
    """/api/v1/analytics/tools/: calls, errors, cost and p50/p95 duration per tool, server and template."""
    durations = sorted(ToolCall.objects.filter(execution=execution).values_list("duration_ms", flat=True))
    alice_api, bob_api = APIClient(), APIClient()
    alice_api.force_login(alice)
    bob_api.force_login(bob)
    by_server = alice_api.get("/api/v1/analytics/tools/", {"group_by": "server"})
    assert by_server.status_code == 200, by_server.content
    [row] = by_server.json()["results"]
    assert (row["key"], row["name"], row["calls"], row["errors"], Decimal(row["cost"])) == (
        str(tracker.pk), "tracker", 3, 1, Decimal("0.02"))
    assert (row["p50_ms"], row["p95_ms"]) == (durations[1], durations[2])  # nearest rank of 3
    by_tool = {row["key"]: row for row in alice_api.get("/api/v1/analytics/tools/").json()["results"]}
    assert {key: (row["calls"], row["errors"]) for key, row in by_tool.items()} == {
        "tracker__add": (1, 0), "tracker__echo_header": (1, 0), "tracker__fail": (1, 1)}
    [template] = alice_api.get("/api/v1/analytics/tools/", {"group_by": "template"}).json()["results"]
    assert (template["key"], template["name"], template["calls"]) == (
        str(execution.template_id), execution.template.name, 3)
    assert bob_api.get("/api/v1/analytics/tools/").json()["results"] == []  # his own runs only
    assert bob_api.get("/api/v1/analytics/tools/", {"owner": "alice"}).status_code == 403
    csv = alice_api.get("/api/v1/analytics/tools/", {"group_by": "server", "format": "csv"})
    assert csv.status_code == 200 and csv.content.decode().splitlines()[0] == "key,name,calls,errors,cost,p50_ms,p95_ms"


def test_a_deleted_servers_calls_stay_its_own_in_the_analytics_by_server(alice, tracker, mcp_server, openai_server):
    """Its calls' `server` is null once it is deleted, as a built-in's is: they fell into the built-ins' row."""
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}},
                                    {"name": "tracker__fail", "arguments": {"message": "no"}},
                                    {"name": "calculator", "arguments": {"expression": "2 + 40"}}], usage=USAGE)
    openai_server.reply(content="42.", usage=USAGE)
    assert chat(alice, ["tracker__*", "calculator"]).status == "completed"
    api = APIClient()
    api.force_login(alice)
    assert api.delete(f"/api/v1/tools/servers/{tracker.pk}/").status_code == 204

    by_server = api.get("/api/v1/analytics/tools/", {"group_by": "server"}).json()["results"]

    assert [(row["key"], row["name"], row["calls"], row["errors"]) for row in by_server] == [
        (str(tracker.pk), "tracker", 2, 1), (None, "", 1, 0)]
    by_tool = {row["key"]: row["name"] for row in api.get("/api/v1/analytics/tools/").json()["results"]}
    assert by_tool == {"tracker__add": "tracker", "tracker__fail": "tracker", "calculator": ""}


def test_item_05_each_answered_call_is_charged_on_its_row_node_run_reply_and_rollups(
        alice, bob, staff, client, tracker, prices, mcp_server, openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}},
                                    {"name": "tracker__echo_header", "arguments": {"name": "host"}},
                                    {"name": "tracker__fail", "arguments": {"message": "no"}}], usage=USAGE)
    openai_server.reply(content="42.", usage=USAGE)

    execution = chat(alice, ["tracker__*"])

    assert execution.status == "completed", execution.error_message
    rows = {row.tool: row.cost for row in ToolCall.objects.filter(execution=execution)}
    assert rows == {"tracker__add": Decimal("0.01"), "tracker__echo_header": Decimal("0.01"),
                    "tracker__fail": Decimal("0")}  # the server's price in force; a failed call is not charged
    execution.refresh_from_db()
    assert execution.cost == 2 * LLM_COST + Decimal("0.02")
    assert NodeExecution.objects.get(execution=execution, node_id="tools").cost == Decimal("0.02")
    assert_all(execution)  # I3 (nodes, and the reply carries it), I1, I2, I6
    mcp_rows = UsageRollup.objects.filter(owner=alice, provider="mcp")
    assert dict(mcp_rows.values_list("model", "cost")) == {"tracker__add": Decimal("0.01"),
                                                           "tracker__echo_header": Decimal("0.01")}
    call_command("reconcile_aggregates", stdout=StringIO())  # exits 1 on any drift
    assert_tool_analytics(alice, bob, tracker, execution)
    client.force_login(staff)  # the admin's usage dashboard shows them too
    dashboard = client.get(reverse("admin:analytics_usagerollup_changelist")).content.decode()
    assert 'data-testid="tools-by-server"' in dashboard and 'data-key="tracker__fail"' in dashboard
    called = ExecutionEvent.objects.filter(execution=execution, event="tool_called").order_by("seq")
    assert [Decimal(event.data["cost"]) if "cost" in event.data else None for event in called] == [
        Decimal("0.01"), Decimal("0.01"), None]


def test_item_05_a_run_whose_hard_budget_cannot_cover_a_priced_call_does_not_make_it(
        alice, staff, tracker, mcp_server, openai_server):
    staff_api(staff).post("/api/v1/pricing/", {
        "provider": "mcp", "model_pattern": "tracker__add", "per_call": "5",
        "effective_from": (timezone.now() - timedelta(minutes=1)).isoformat()}, format="json")
    budget = budget_create(owner=staff, scope="user", target_id=str(alice.pk), period="day", timezone_name="UTC",
                           mode="hard", limit_usd=Decimal("1"))
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}},
                                    {"name": "tracker__echo_header", "arguments": {"name": "host"}}], usage=USAGE)
    openai_server.reply(content="Too dear.", usage=USAGE)

    execution = chat(alice, ["tracker__*"])

    assert execution.status == "completed", execution.error_message
    refused, unpriced = tool_messages(openai_server.requests[1])
    assert refused["content"] == f"Error: the run reached budget {budget.pk}: the priced tool 'tracker__add' was not called"
    assert unpriced["content"] != "" and not unpriced["content"].startswith("Error")  # an unpriced tool still runs
    assert mcp_server.calls == [("echo_header", {"name": "host"})]
    assert ExecutionEvent.objects.filter(execution=execution, event="limit_exceeded", data__limit="budget").exists()
    execution.refresh_from_db()
    assert execution.cost == 2 * LLM_COST
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())  # the budget's period too


def test_item_05_a_python_graphs_priced_call_is_charged_too(alice, tracker, prices, mcp_server, openai_server,
                                                             settings, monkeypatch):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}}], usage=USAGE)
    openai_server.reply(content="42.", usage=USAGE)

    execution = run_agent(alice, settings, monkeypatch, openai_server)

    assert execution.status == "completed", execution.error_message
    assert ToolCall.objects.get(execution=execution).cost == Decimal("0.01")
    execution.refresh_from_db()
    assert execution.cost == 2 * LLM_COST + Decimal("0.01")
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())


def test_item_05_a_python_graphs_priced_calls_are_held_to_the_budget_before_they_are_made(
        alice, staff, tracker, mcp_server, openai_server, settings, monkeypatch):
    """A ReAct agent's ToolNode makes a turn's calls at once: each priced one is reserved before it is made, the
    ones still in flight counted, so two calls of 0.60 under a hard budget of 1 make one call, not two."""
    staff_api(staff).post("/api/v1/pricing/", {
        "provider": "mcp", "model_pattern": "tracker__add", "per_call": "0.6",
        "effective_from": (timezone.now() - timedelta(minutes=1)).isoformat()}, format="json")
    budget = budget_create(owner=staff, scope="user", target_id=str(alice.pk), period="day", timezone_name="UTC",
                           mode="hard", limit_usd=Decimal("1"))
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}},
                                    {"name": "tracker__add", "arguments": {"a": 3, "b": 4}},
                                    {"name": "tracker__echo_header", "arguments": {"name": "host"}}], usage=USAGE)
    openai_server.reply(content="One sum was too dear.", usage=USAGE)

    execution = run_agent(alice, settings, monkeypatch, openai_server, attribute="any_tool_graph")

    assert execution.status == "completed", execution.error_message
    assert sorted(name for name, _ in mcp_server.calls) == ["add", "echo_header"]  # one add only
    refusal = f"the run reached budget {budget.pk}: the priced tool 'tracker__add' was not called"
    assert sorted(text_of(message) for message in tool_messages(openai_server.requests[1])
                  if refusal in text_of(message)) == [refusal]
    rows = ToolCall.objects.filter(execution=execution, tool="tracker__add")
    assert sorted((row.ok, row.cost, row.error) for row in rows) == [
        (False, Decimal("0"), refusal), (True, Decimal("0.6"), "")]
    assert ExecutionEvent.objects.filter(execution=execution, event="limit_exceeded", data__limit="budget").exists()
    execution.refresh_from_db()
    assert execution.cost == 2 * LLM_COST + Decimal("0.6")
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())  # the budget's period too


def test_item_05_recompute_costs_re_prices_past_tool_calls_and_every_total_follows(
        alice, staff, tracker, mcp_server, openai_server):
    client = staff_api(staff)
    hour_ago = timezone.now() - timedelta(hours=1)
    client.post("/api/v1/pricing/", {"provider": "mcp", "model_pattern": "tracker__add", "per_call": "0.01",
                                     "effective_from": hour_ago.isoformat()}, format="json")
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 2, "b": 40}},
                                    {"name": "tracker__echo_header", "arguments": {"name": "host"}}], usage=USAGE)
    openai_server.reply(content="42.", usage=USAGE)
    execution = chat(alice, ["tracker__*"])
    assert dict(ToolCall.objects.filter(execution=execution).values_list("tool", "cost")) == {
        "tracker__add": Decimal("0.01"), "tracker__echo_header": Decimal("0")}  # echo_header had no price
    # A server-wide price backdated before add's own: add keeps its later row, echo_header gets the server's.
    client.post("/api/v1/pricing/", {"provider": "mcp", "model_pattern": "tracker__.*", "per_call": "0.02",
                                     "effective_from": (hour_ago - timedelta(hours=1)).isoformat()}, format="json")
    out = StringIO()

    call_command("recompute_costs", stdout=out)

    assert "re-priced 1 MCP tool calls" in out.getvalue()
    assert dict(ToolCall.objects.filter(execution=execution).values_list("tool", "cost")) == {
        "tracker__add": Decimal("0.01"), "tracker__echo_header": Decimal("0.02")}
    execution.refresh_from_db()
    assert execution.cost == 2 * LLM_COST + Decimal("0.03")
    assert UsageRollup.objects.get(owner=alice, provider="mcp", model="tracker__echo_header").cost == Decimal("0.02")
    assert_all(execution)
    call_command("reconcile_aggregates", stdout=StringIO())


@pytest.mark.parametrize("body, path", [
    ({"provider": "mcp", "model_pattern": "tracker__.*"}, "per_call"),
    ({"provider": "mcp", "model_pattern": "tracker__.*", "per_call": "1", "input_per_million": "1"},
     "input_per_million"),
    ({"provider": "openai", "model_pattern": "x", "input_per_million": "1", "output_per_million": "1",
      "per_call": "1"}, "per_call"),
    ({"provider": "openai", "model_pattern": "x", "output_per_million": "1"}, "input_per_million"),
])
def test_item_05_a_tool_price_is_per_call_and_a_model_price_per_token(staff, body, path):
    response = staff_api(staff).post("/api/v1/pricing/", body, format="json")

    assert response.status_code == 400, response.content
    assert path in [detail["path"] for detail in response.json()["error"]["details"]]


def test_item_05_a_wildcard_model_price_never_prices_a_tool(staff):
    from workflows.pricing import tool_price_for_call

    client = staff_api(staff)
    assert client.post("/api/v1/pricing/", {"provider": "*", "model_pattern": ".*", "input_per_million": "9",
                                            "output_per_million": "9"}, format="json").status_code == 201
    assert tool_price_for_call(tool="tracker__add") == Decimal("0")
    in_force = client.get("/api/v1/pricing/in-force/", {"provider": "mcp", "model": "tracker__add"})
    assert in_force.status_code == 404


def test_item_05_the_runs_tool_call_log_names_each_calls_server_and_cost(alice, tracker, prices, mcp_server,
                                                                          openai_server):
    openai_server.reply(tool_calls=[{"name": "tracker__add", "arguments": {"a": 1, "b": 2}},
                                    {"name": "calculator", "arguments": {"expression": "1 + 2"}}])
    openai_server.reply(content="3.")
    execution = chat(alice, ["tracker__*", "calculator"])
    client = APIClient()
    client.force_login(alice)

    log = client.get(f"/api/v1/executions/{execution.pk}/").json()["tool_call_log"]

    assert [(call["tool"], call["server"], Decimal(call["cost"])) for call in log] == [
        ("tracker__add", str(tracker.pk), Decimal("0.01")), ("calculator", None, Decimal("0"))]
