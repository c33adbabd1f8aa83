import html
import json
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models import Count, Sum
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agent_server.assistants import assistant_create
from agent_server.models import AgentRun, Assistant, AssistantVersion, StoreItem
from analytics.models import ModelPrice, TemplateAnalytics
from audit.models import AuditEvent
from audit.services import audit_queue_flush
from conversations.models import Conversation, Document, Message
from conversations.services import document_create
from datasets.models import Dataset, DatasetItem
from datasets.services import dataset_create, dataset_item_from_run
from knowledge.models import Collection, CollectionDocument
from knowledge.services import collection_create, document_add
from prompts.models import Prompt, PromptAssignment, PromptLabel, PromptVersion
from prompts.services import prompt_create, prompt_label_set, prompt_version_assigned, prompt_version_create
from scores.models import Score
from scores.services import score_create
from tests.factories import WorkflowDefinitionFactory
from tools.models import McpServer
from tools.services import mcp_server_create
from workflows.models import (
    ExecutionEvent,
    LLMCall,
    NodeExecution,
    ToolCall,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowSchedule,
    WorkflowTemplate,
)
from workflows.services.run_requests import ChatRequest, ExecutionRequest
from workflows.services.runs import execution_create, execution_run
from workflows.services.schedules import schedule_create
from workflows.services.templates import template_create

pytestmark = pytest.mark.django_db

EVERY_MODEL = [
    Conversation, Message, Document,
    WorkflowTemplate, WorkflowDefinition, WorkflowExecution, NodeExecution, ToolCall, ExecutionEvent,
    WorkflowSchedule, LLMCall, TemplateAnalytics, ModelPrice, AuditEvent, AgentRun, StoreItem, Assistant,
    AssistantVersion, Prompt, PromptVersion, PromptLabel, PromptAssignment, Score, Dataset, DatasetItem, McpServer,
    Collection, CollectionDocument,
]


def url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def chat_turn(owner, message: str = "What is 12*7?") -> WorkflowExecution:
    execution = execution_create(ChatRequest(owner=owner, message=message))
    return execution_run(execution_id=execution.pk)


def audit_event(action: str = "execution.started") -> AuditEvent:
    n = AuditEvent.objects.count()
    return AuditEvent.objects.create(created_at=timezone.now(), action=action, prev_hash=f"{n:064x}",
                                     hash=f"{n + 1:064x}")


def totals_of(conversation: Conversation) -> dict:
    sums = conversation.messages.aggregate(
        message_count=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        total_tokens=Sum("total_tokens"), total_cost=Sum("cost"))
    return {key: value or 0 for key, value in sums.items()}


def stored_totals(conversation: Conversation) -> dict:
    conversation.refresh_from_db()
    return {key: getattr(conversation, key) for key in
            ("message_count", "prompt_tokens", "completion_tokens", "total_tokens", "total_cost")}


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def run(alice):
    execution = chat_turn(alice)
    assert execution.status == WorkflowExecution.Status.COMPLETED, execution.error_message
    return execution


def test_every_model_is_registered():
    assert {model for model in EVERY_MODEL if admin.site.is_registered(model)} == set(EVERY_MODEL)


def test_it_shows_every_changelist_and_change_page(staff_client, alice, run):
    document_create(owner=alice, title="Tea", content="Green tea is steeped at 80 degrees.")
    template = WorkflowTemplate.objects.get(key="universal_chat")
    definition = WorkflowDefinitionFactory(owner=alice, name="My chat", nodes=template.graph["nodes"],
                                           edges=template.graph["edges"])
    WorkflowSchedule.objects.create(owner=alice, name="Nightly", definition=definition, cron="0 3 * * *")
    audit_event()
    AgentRun.objects.create(execution=run, assistant_id="universal_chat")
    StoreItem.objects.create(owner=alice, namespace="notes", key="k", value={"text": "calculator"})
    assistant_create(owner=alice, graph_id="universal_chat", name="calculator helper", context={"temperature": 0.1})
    prompt = prompt_create(owner=alice, name="calculator", type="text", content="Compute.", config={})
    prompt_version_create(prompt=prompt, type="text", content="Compute {{x}}.", config={}, actor=alice)
    label = prompt_label_set(prompt=prompt, name="production", split={"1": 50, "2": 50}, actor=alice)
    prompt_version_assigned(label=label, conversation_id=run.conversation_id)
    score_create(owner=alice, name="calculator", value=1.0, data_type="numeric", execution_id=run.pk)
    dataset_item_from_run(dataset=dataset_create(owner=alice, name="calculator"), execution_id=run.pk)
    mcp_server_create(owner=alice, name="calculator", url="https://93.184.215.14/mcp", discover=False)
    collection = collection_create(owner=alice, name="calculator", embedding_model="local/local-embed-1")
    document_add(collection=collection, actor=alice, title="calculator", text="It adds.")

    for model in EVERY_MODEL:
        assert staff_client.get(url(model, "changelist")).status_code == 200, model
        assert staff_client.get(url(model, "changelist"), {"q": "calculator"}).status_code == 200, model
        row = model.objects.first()
        assert row is not None, model
        assert staff_client.get(url(model, "change", row.pk)).status_code == 200, model


def test_the_execution_page_shows_its_nodes_and_tool_calls(staff_client, run):
    response = staff_client.get(url(WorkflowExecution, "change", run.pk))

    content = response.content.decode()
    node_ids = set(run.node_executions.values_list("node_id", flat=True))
    assert node_ids
    for node_id in node_ids:
        assert node_id in content
    assert run.tool_call_rows.filter(tool="calculator").exists()
    assert "calculator" in content
    assert run.llm_call_rows.exists() and run.events.exists()
    assert "workflow_completed" in content


def test_the_template_page_shows_its_analytics(staff_client, run):
    response = staff_client.get(url(WorkflowTemplate, "change", run.template_id))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Successful executions" in content and "Total cost" in content
    assert TemplateAnalytics.objects.get(template_id=run.template_id).successful_executions == 1


def test_the_page_of_a_template_that_never_ran_shows_zeros(staff_client):
    template = WorkflowTemplate.objects.get(key="summarize")
    assert not TemplateAnalytics.objects.filter(template=template).exists()

    response = staff_client.get(url(WorkflowTemplate, "change", template.pk))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Successful executions" in content
    for figure in ("total_executions", "successful_executions", "total_tokens"):
        assert re.search(rf'field-{figure}">(?:(?!field-).)*<div class="readonly">0</div>', content, re.S), figure


def changelist_queries(client) -> dict:
    counts = {}
    for model in (Conversation, Message, WorkflowExecution, NodeExecution, ToolCall, LLMCall, ExecutionEvent,
                  TemplateAnalytics):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url(model, "changelist")).status_code == 200
        counts[model] = len(queries)
    return counts


def test_changelists_make_no_query_per_row(staff_client, alice, bob):
    chat_turn(alice)
    one_run = changelist_queries(staff_client)
    chat_turn(alice, "What is 3+4?")
    chat_turn(bob, "What is 6*6?")

    assert changelist_queries(staff_client) == one_run


def test_deleting_a_message_keeps_the_conversation_totals_exact(staff_client, alice, run):
    chat_turn(alice, "What is 3+4?")
    conversation = run.conversation
    execution_run(execution_id=execution_create(
        ChatRequest(owner=alice, message="And 2*5?", conversation_id=conversation.pk)).pk)
    assistant = conversation.messages.filter(role=Message.Role.ASSISTANT).first()
    assert assistant.total_tokens > 0 and assistant.cost > Decimal("0")

    response = staff_client.post(url(Message, "delete", assistant.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Message.objects.filter(pk=assistant.pk).exists()
    assert stored_totals(conversation) == totals_of(conversation)
    assert conversation.message_count == 3


def test_bulk_deleting_messages_keeps_the_conversation_totals_exact(staff_client, alice, run):
    conversation = run.conversation
    execution_run(execution_id=execution_create(
        ChatRequest(owner=alice, message="And 2*5?", conversation_id=conversation.pk)).pk)
    doomed = list(conversation.messages.order_by("sequence").values_list("pk", flat=True)[1:3])

    response = staff_client.post(url(Message, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(pk) for pk in doomed], "post": "yes"})

    assert response.status_code == 302
    assert not Message.objects.filter(pk__in=doomed).exists()
    assert stored_totals(conversation) == totals_of(conversation)
    assert conversation.message_count == 2 and conversation.total_tokens > 0


def test_the_conversation_page_cannot_delete_or_add_messages(staff_client, run):
    inline = admin.site.get_model_admin(Conversation).get_inline_instances(None)[0]
    request = type("Request", (), {"user": run.owner})

    assert inline.model is Message and inline.can_delete is False
    assert not inline.has_add_permission(request, run.conversation)
    assert not admin.site.get_model_admin(Message).has_add_permission(request)


def test_the_cancel_action_cancels_pending_runs_and_skips_finished_ones(staff_client, alice, run):
    pending = execution_create(ChatRequest(owner=alice, message="What is 1+1?", mode="background"))

    response = staff_client.post(url(WorkflowExecution, "changelist"), {
        "action": "cancel_runs", "_selected_action": [str(pending.pk), str(run.pk)]}, follow=True)

    pending.refresh_from_db()
    run.refresh_from_db()
    assert pending.status == WorkflowExecution.Status.CANCELLED
    assert run.status == WorkflowExecution.Status.COMPLETED
    notes = [str(m) for m in response.context["messages"]]
    assert notes == ["1 run(s) cancelled or asked to stop; 1 already finished, skipped."]
    assert pending.events.order_by("-seq").first().event == "workflow_cancelled"


@pytest.mark.parametrize("model", [AuditEvent, ExecutionEvent])
def test_events_cannot_be_added_changed_or_deleted(staff_client, run, model):
    if model is AuditEvent:
        audit_queue_flush()  # the run's rows, queued for the chain (PostgreSQL), join it as the changelist would
        audit_event()
    row = model.objects.first()
    before = model.objects.count()

    assert staff_client.get(url(model, "add")).status_code == 403
    assert staff_client.post(url(model, "change", row.pk), {"action": "changed"}).status_code == 403
    assert staff_client.post(url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    response = staff_client.get(url(model, "changelist"))
    assert response.context["action_form"] is None  # not even delete_selected is offered
    response = staff_client.post(url(model, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(row.pk)], "post": "yes"})
    assert model.objects.count() == before
    assert staff_client.get(url(model, "change", row.pk)).context["has_change_permission"] is False


@pytest.mark.parametrize("model", [WorkflowExecution, NodeExecution, ToolCall, LLMCall, TemplateAnalytics])
def test_engine_written_rows_cannot_be_added(staff_client, model):
    assert staff_client.get(url(model, "add")).status_code == 403


@pytest.mark.parametrize("model", [Conversation, Message, WorkflowExecution, NodeExecution, LLMCall,
                                   TemplateAnalytics])
def test_usage_aggregates_are_read_only(model):
    readonly = set(admin.site.get_model_admin(model).readonly_fields)
    cost = "total_cost" if model in (Conversation, TemplateAnalytics) else "cost"

    assert {"prompt_tokens", "completion_tokens", "total_tokens", cost} <= readonly


def test_posting_a_conversation_leaves_its_totals_alone(staff_client, run):
    conversation = run.conversation
    before = stored_totals(conversation)

    response = staff_client.post(url(Conversation, "change", conversation.pk), {
        "owner": conversation.owner_id, "title": "Renamed", "status": "active", "metadata": "{}",
        "total_tokens": 1, "message_count": 99, "total_cost": "5",
        "messages-TOTAL_FORMS": 0, "messages-INITIAL_FORMS": 0})

    assert response.status_code == 302, response.content
    assert stored_totals(conversation) == before
    assert conversation.title == "Renamed"


def test_builtin_templates_cannot_be_changed_or_deleted(staff_client):
    template = WorkflowTemplate.objects.get(key="universal_chat")

    page = staff_client.get(url(WorkflowTemplate, "change", template.pk))
    assert page.status_code == 200 and page.context["has_change_permission"] is False
    assert staff_client.post(url(WorkflowTemplate, "change", template.pk), {"name": "x"}).status_code == 403
    assert staff_client.post(url(WorkflowTemplate, "delete", template.pk), {"post": "yes"}).status_code == 403
    staff_client.post(url(WorkflowTemplate, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(template.pk)], "post": "yes"})
    template.refresh_from_db()
    assert template.name != "x"


CHAT_GRAPH = {"nodes": [{"id": "start", "type": "start"}, {"id": "llm", "type": "model"}, {"id": "end", "type": "end"}],
              "edges": [{"source": "start", "target": "llm"}, {"source": "llm", "target": "end"}]}
BROKEN_GRAPH = {"nodes": [{"id": "start", "type": "start"}, {"id": "x", "type": "no_such_type"}],
                "edges": [{"source": "start", "target": "nowhere"}]}


def audited(action: str, target) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, target_id=str(target.pk)))


def template_form(template: WorkflowTemplate, **changes) -> dict:
    """The change page's form as a browser posts it (the JSON fields' hidden initial values too)."""
    params, graph = json.dumps(template.params), json.dumps(template.graph)
    return {"name": template.name, "description": template.description, "category": template.category,
            "is_public": "on" if template.is_public else "", "params": params, "initial-params": params,
            "graph": graph, "initial-graph": graph, **changes}


def test_a_template_changed_in_the_admin_is_refused_what_the_api_refuses(staff_client, alice):
    template = template_create(owner=alice, key="tea", name="Tea", graph=CHAT_GRAPH)
    stored = template.graph

    broken = staff_client.post(url(WorkflowTemplate, "change", template.pk), template_form(
        template, name="Renamed", graph=json.dumps(BROKEN_GRAPH)))
    bad_params = staff_client.post(url(WorkflowTemplate, "change", template.pk), template_form(
        template, name="Renamed", params=json.dumps({"temperature": 7})))

    assert broken.status_code == bad_params.status_code == 200  # the form again, with what is wrong
    said = " ".join(broken.context["adminform"].form.errors["graph"])
    assert "no_such_type" in said and "nowhere" in said
    assert "temperature" in " ".join(bad_params.context["adminform"].form.errors["params"])
    template.refresh_from_db()
    assert (template.name, template.graph, template.version) == ("Tea", stored, 1)
    assert audited("template.updated", template) == []


def test_a_template_changed_in_the_admin_goes_through_the_service_and_is_audited(staff_client, staff, alice):
    template = template_create(owner=alice, key="tea", name="Tea", graph=CHAT_GRAPH)
    graph = {**CHAT_GRAPH, "nodes": [*CHAT_GRAPH["nodes"][:1], {"id": "llm", "type": "model",
                                                                "config": {"temperature": 0.2}}, CHAT_GRAPH["nodes"][2]]}

    response = staff_client.post(url(WorkflowTemplate, "change", template.pk), template_form(
        template, name="Green tea", graph=json.dumps(graph)))

    assert response.status_code == 302, response.content.decode()[:2000]
    template.refresh_from_db()
    assert (template.name, template.version, template.owner) == ("Green tea", 2, alice)
    (row,) = audited("template.updated", template)
    assert (row.actor_id, row.data["fields"]) == (staff.pk, ["graph", "name"])


def test_a_template_added_in_the_admin_is_validated_and_audited(staff_client, staff, alice):
    form = {"key": "tea", "name": "Tea", "description": "", "category": "general", "owner": alice.pk,
            "params": "{}"}

    refused = staff_client.post(url(WorkflowTemplate, "add"), {**form, "graph": json.dumps(BROKEN_GRAPH)})
    added = staff_client.post(url(WorkflowTemplate, "add"), {**form, "graph": json.dumps(CHAT_GRAPH)})

    assert refused.status_code == 200 and "graph" in refused.context["adminform"].form.errors
    assert added.status_code == 302, added.content.decode()[:2000]
    (template,) = WorkflowTemplate.objects.filter(key="tea")
    assert template.owner == alice
    (row,) = audited("template.created", template)
    assert row.actor_id == staff.pk


def test_templates_and_definitions_deleted_in_the_admin_are_audited(staff_client, staff, alice):
    one, two = (template_create(owner=alice, key=key, name=key, graph=CHAT_GRAPH) for key in ("one", "two"))
    definition = WorkflowDefinitionFactory(owner=alice, name="Mine", nodes=CHAT_GRAPH["nodes"],
                                           edges=CHAT_GRAPH["edges"])

    assert staff_client.post(url(WorkflowTemplate, "delete", one.pk), {"post": "yes"}).status_code == 302
    assert staff_client.post(url(WorkflowTemplate, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(two.pk)], "post": "yes"}).status_code == 302
    assert staff_client.post(url(WorkflowDefinition, "delete", definition.pk), {"post": "yes"}).status_code == 302

    assert not WorkflowTemplate.objects.filter(pk__in=[one.pk, two.pk]).exists()
    assert not WorkflowDefinition.objects.filter(pk=definition.pk).exists()
    rows = [*audited("template.deleted", one), *audited("template.deleted", two),
            *audited("definition.deleted", definition)]
    assert [row.actor_id for row in rows] == [staff.pk] * 3


def test_a_definition_changed_in_the_admin_is_validated_and_audited(staff_client, staff, alice):
    definition = WorkflowDefinitionFactory(owner=alice, name="Mine", nodes=CHAT_GRAPH["nodes"],
                                           edges=CHAT_GRAPH["edges"])
    form = {"name": "Ours", "description": "", "is_public": "", "initial-metadata": "{}"}

    refused = staff_client.post(url(WorkflowDefinition, "change", definition.pk), {**form, "metadata": "[1, 2]"})
    changed = staff_client.post(url(WorkflowDefinition, "change", definition.pk), {**form, "metadata": "{}"})

    assert refused.status_code == 200 and "metadata" in refused.context["adminform"].form.errors
    assert changed.status_code == 302, changed.content.decode()[:2000]
    definition.refresh_from_db()
    assert (definition.name, definition.owner) == ("Ours", alice)
    (row,) = audited("definition.updated", definition)
    assert (row.actor_id, row.data["fields"]) == (staff.pk, ["name"])


def test_a_prices_figures_are_history_in_the_admin_only_is_active_changes_audited(staff_client, staff):
    price = ModelPrice.objects.get(provider="local", model_pattern="local-.*")
    figures = (price.input_per_million, price.output_per_million, price.effective_from)

    response = staff_client.post(url(ModelPrice, "change", price.pk), {
        "provider": price.provider, "model_pattern": price.model_pattern, "input_per_million": "999",
        "cached_input_per_million": "", "output_per_million": "6", "effective_from_0": "2025-01-01",
        "effective_from_1": "00:00:00", "is_active": ""})

    assert response.status_code == 302, response.content.decode()[:2000]
    price.refresh_from_db()
    assert (price.input_per_million, price.output_per_million, price.effective_from) == figures
    assert price.is_active is False
    (row,) = audited("price.changed", price)
    assert (row.actor_id, row.data["change"], row.data["is_active"]) == (staff.pk, "updated", False)


def test_a_new_price_added_in_the_admin_is_checked_as_the_api_checks_it_and_audited(staff_client, staff):
    old = ModelPrice.objects.get(provider="local", model_pattern="local-.*")
    page = staff_client.get(url(ModelPrice, "change", old.pk)).content.decode()
    (link,) = re.findall(r'href="(/admin/analytics/modelprice/add/\?[^"]+)"', page)  # its figures to start from
    initial = staff_client.get(html.unescape(link)).context["adminform"].form.initial
    assert (initial["provider"], initial["model_pattern"], Decimal(initial["output_per_million"])) == (
        "local", "local-.*", old.output_per_million)
    form = {"provider": "local", "model_pattern": "local-.*", "input_per_million": "0.75",
            "cached_input_per_million": "", "output_per_million": "2", "per_call": "",
            "effective_from_0": "2030-01-01", "effective_from_1": "00:00:00", "is_active": "on"}

    refused = [staff_client.post(url(ModelPrice, "add"), {**form, **bad}) for bad in (
        {"provider": "nope"}, {"per_call": "0.01"}, {"output_per_million": ""})]
    added = staff_client.post(url(ModelPrice, "add"), form)

    assert [set(response.context["adminform"].form.errors) for response in refused] == [
        {"provider"}, {"per_call"}, {"output_per_million"}]
    assert added.status_code == 302, added.content.decode()[:2000]
    new = ModelPrice.objects.get(provider="local", model_pattern="local-.*", input_per_million=Decimal("0.75"))
    (row,) = audited("price.changed", new)
    assert (row.actor_id, row.data["change"]) == (staff.pk, "created")
    old.refresh_from_db()
    assert old.is_active and old.input_per_million == Decimal("0.5")


def test_prices_cannot_be_deleted_in_the_admin(staff_client):
    price = ModelPrice.objects.first()

    assert staff_client.post(url(ModelPrice, "delete", price.pk), {"post": "yes"}).status_code == 403
    assert ModelPrice.objects.filter(pk=price.pk).exists()


def test_it_redirects_non_staff_to_login(client, alice):
    client.force_login(alice)

    response = client.get(url(WorkflowExecution, "changelist"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


# --- read-only pages, header, the executions list -----------------------------------------------------------
READ_ONLY = [WorkflowExecution, NodeExecution, ToolCall, LLMCall, ExecutionEvent, AuditEvent, TemplateAnalytics]


def save_buttons(content: str) -> list[str]:
    return re.findall(r'name="(_save|_continue|_addanother)"', content)


def test_read_only_pages_have_no_save_button(staff_client, run):
    audit_event()
    for model in READ_ONLY:
        row = model.objects.first()
        assert row is not None, model
        page = staff_client.get(url(model, "change", row.pk))
        assert page.status_code == 200, model
        assert save_buttons(page.content.decode()) == [], model
    builtin = WorkflowTemplate.objects.get(key="universal_chat")
    assert save_buttons(staff_client.get(url(WorkflowTemplate, "change", builtin.pk)).content.decode()) == []


def test_editable_pages_keep_their_save_button(staff_client, run):
    price = ModelPrice.objects.first()
    assert "_save" in save_buttons(staff_client.get(url(ModelPrice, "change", price.pk)).content.decode())
    assert "_save" in save_buttons(staff_client.get(url(Conversation, "change", run.conversation_id))
                                   .content.decode())


def test_a_run_page_refuses_a_post(staff_client, run):
    response = staff_client.post(url(WorkflowExecution, "change", run.pk), {"status": "failed"})
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.status == WorkflowExecution.Status.COMPLETED


def test_the_site_is_called_chatter(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()
    assert '<div id="site-name"><a href="/admin/">Chatter</a></div>' in page
    assert "<title>Chatter administration | Chatter</title>" in page
    assert "Django administration" not in page and "Django site admin" not in page


def test_the_executions_list_shows_short_ids_tokens_and_cost(staff_client, run):
    page = staff_client.get(url(WorkflowExecution, "changelist"))
    content = page.content.decode()
    columns = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', content)
    assert columns == ["short_id", "status", "what", "owner", "model", "total_tokens", "cost",
                       "execution_time_ms", "created_at"]
    [id_cell] = re.findall(r'<th class="field-short_id">(.*?)</th>', content)
    assert re.fullmatch(rf'<a href="[^"]*">{str(run.pk)[:8]}</a>', id_cell), id_cell
    assert f'<td class="field-total_tokens">{run.total_tokens}</td>' in content
    assert page.context["action_form"] is not None  # the cancel action is still offered


def test_the_executions_list_shows_the_runs_waiting_for_input_and_their_question(staff_client, alice, run):
    from tests.api.test_human_input import ASKING
    from workflows.services.runs import execution_run_now

    waiting = execution_run_now(ExecutionRequest(owner=alice, graph=ASKING, message="hello"))

    page = staff_client.get(url(WorkflowExecution, "changelist"), {"status__exact": "waiting"})

    content = page.content.decode()
    assert str(waiting.pk)[:8] in content and str(run.pk)[:8] not in content
    assert "custom: asks &#x27;How many?&#x27;" in content
    assert staff_client.get(url(WorkflowExecution, "change", waiting.pk)).status_code == 200


# --- schedules: changed and deleted through the services ----------------------------------------------------
def schedule_form(schedule: WorkflowSchedule, **changes) -> dict:
    """The schedule's change form as the page posts it, with `changes`."""
    form = {"name": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone,
            "input": json.dumps(schedule.input), "config": json.dumps(schedule.config), "webhook": schedule.webhook,
            "ends_at_0": "", "ends_at_1": "", **({"enabled": "on"} if schedule.enabled else {})}
    return {**form, **changes}


def audit_actions(target) -> list[tuple[str, str | None]]:
    audit_queue_flush()
    return [(row.action, row.actor.username if row.actor else None)
            for row in AuditEvent.objects.filter(target_id=str(target.pk)).order_by("id")]


@pytest.fixture
def nightly(alice) -> WorkflowSchedule:
    return schedule_create(owner=alice, name="Nightly", cron="0 3 * * *", template="universal_chat",
                           run_input={"message": "hi"})


def test_the_schedule_page_refuses_a_cron_and_time_zone_the_api_refuses(staff_client, nightly):
    response = staff_client.post(url(WorkflowSchedule, "change", nightly.pk),
                                 schedule_form(nightly, cron="61 99 * * *", timezone="Not/AZone"))

    assert response.status_code == 200  # the form again, with the API's words on each field
    errors = response.context["adminform"].form.errors
    assert errors["cron"] == ["'61 99 * * *': its minute field '61' is not valid (0-59, with * , - and /)"]
    assert errors["timezone"] == ["'Not/AZone' is not an IANA time zone (e.g. Europe/Paris)"]
    stored = WorkflowSchedule.objects.get(pk=nightly.pk)
    assert (stored.cron, stored.timezone, stored.next_run_at) == ("0 3 * * *", "UTC", nightly.next_run_at)
    assert audit_actions(nightly) == [("schedule.created", "alice")]


def test_a_schedule_changed_in_the_admin_moves_its_next_run_and_is_audited(staff_client, nightly):
    response = staff_client.post(url(WorkflowSchedule, "change", nightly.pk),
                                 schedule_form(nightly, cron="30 7 * * *", timezone="Asia/Tokyo"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    stored = WorkflowSchedule.objects.get(pk=nightly.pk)
    local = stored.next_run_at.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (stored.cron, stored.timezone, local.hour, local.minute) == ("30 7 * * *", "Asia/Tokyo", 7, 30)
    assert audit_actions(nightly) == [("schedule.created", "alice"), ("schedule.updated", "root")]
    assert AuditEvent.objects.get(action="schedule.updated").data["fields"] == ["cron", "timezone"]


def test_schedules_deleted_in_the_admin_are_audited(staff_client, alice, nightly):
    other = schedule_create(owner=alice, name="Weekly", cron="0 3 * * 1", template="universal_chat",
                            run_input={"message": "hi"})

    staff_client.post(url(WorkflowSchedule, "delete", nightly.pk), {"post": "yes"})
    staff_client.post(url(WorkflowSchedule, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(other.pk)], "post": "yes"})

    assert not WorkflowSchedule.objects.exists()
    assert audit_actions(nightly)[-1] == ("schedule.deleted", "root")  # the staff member who deleted them
    assert audit_actions(other)[-1] == ("schedule.deleted", "root")
